"""A two-process CPU (gloo) run through the CLI proves the DDP path."""

import json
import os
import subprocess
import sys

import pytest

from vipr.engine import checkpoint as ckpt


# nnclr: its own gathers and queue; hsa: the feature bank sharded and gathered, drawn neighbours, stage queues
# simclr (all-gathered in-batch negatives) and nnclr run in the slow suite (benchmarks/run_slow.sh): 27 s
# of the default suite's 5-minute budget on 2 cores
@pytest.mark.parametrize("method", ["moco_v2", pytest.param("simclr", marks=pytest.mark.slow),
                                    pytest.param("nnclr", marks=pytest.mark.slow), "hsa"])
def test_two_process_pretrain(method, tmp_path):
    cmd = [sys.executable, "-m", "vipr.cli.main", "pretrain", "--data", "builtin:shapes?train=128&test=32&size=16",
           "--method", method, "--backbone", "tiny", "--image-size", "16", "--epochs", "1", "--batch-size", "32",
           "--precision", "fp32", "--out", str(tmp_path), "--nproc-per-node", "2", "--no-progress", "--json",
           "--set", "method.proj_hidden_dim=32", "method.proj_dim=16"]
    if method in ("moco_v2", "nnclr", "hsa"):
        cmd.append("method.queue_size=64")
    if method == "hsa":
        cmd += ["method.warmup_epochs=0", "method.neighbours=3"]
    if method == "nnclr":
        cmd.append("method.pred_hidden_dim=32")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 4  # 128 images / global batch 32
    env_info = json.loads((tmp_path / "env.json").read_text())
    assert env_info["world_size"] == 2
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert len(saved["state"]["rng"]) == 2  # every rank's RNG state, for exact resume
    if method == "hsa":  # every rank drew from the same full-split table
        table = saved["state"]["model"]["table._extra_state"]
        assert table["indices"].shape == (128, 3) and table["bank_epoch"] == 0
