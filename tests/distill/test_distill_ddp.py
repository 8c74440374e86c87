"""Two gloo processes: the distributed path of the distillation methods (slow: about 30 s each on one core)."""

import json
import os
import subprocess
import sys

import pytest

from vipr.engine import checkpoint as ckpt

from .conftest import DATA


@pytest.mark.slow
@pytest.mark.parametrize("method", ["seed", "bingo"])  # queue gathers; bingo: the sharded teacher bank too
def test_two_process_distill(method, teacher, tmp_path):
    cmd = [sys.executable, "-m", "vipr.cli.main", "distill", "--teacher", str(teacher), "--student", "tiny",
           "--method", method, "--data", DATA, "--epochs", "1", "--batch-size", "16", "--precision", "fp32",
           "--device", "cpu", "--out", str(tmp_path), "--nproc-per-node", "2", "--no-progress", "--no-track", "--json"]
    if method == "bingo":
        cmd += ["--set", "method.warmup_epochs=0", "method.neighbours=3"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 4  # 64 images / global batch 16
    state = ckpt.load(tmp_path / "checkpoint.pt")["state"]
    assert len(state["rng"]) == 2 and int(state["model"]["queue_ptr"]) == 0  # 4 x 16 keys through a 16-row queue
    if method == "bingo":
        assert state["model"]["table._extra_state"]["indices"].shape == (64, 3)
