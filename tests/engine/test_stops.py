"""How runs stop and continue: Ctrl-C resumes bit for bit, a NaN stops with the last good checkpoint,
a resumed run says where it continues and a finished one that it is finished."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vipr.config import apply_overrides
from vipr.engine import checkpoint as ckpt
from vipr.errors import ConfigError, TrainingError
from vipr.pretrain import build_config, run_pretrain
from vipr.ssl.moco import MoCoV2

CLI = [sys.executable, "-m", "vipr.cli.main", "pretrain", "--data", "builtin:shapes?train=512&test=32&size=16",
       "--backbone", "tiny", "--image-size", "16", "--epochs", "4", "--batch-size", "32", "--precision", "fp32",
       "--no-progress", "--set", "train.checkpoint_every=0", "train.log_every=1", "method.queue_size=64",
       "method.proj_hidden_dim=32", "method.proj_dim=16"]


def small_config(*overrides):
    """MoCo v2 on 96 images of 16 px, 3 steps an epoch, 2 epochs (as tests/engine/test_trainer.py)."""
    return build_config(apply_overrides({}, [
        "data.source=builtin:shapes?train=96&test=32&size=16", "data.image_size=16", "model.backbone=tiny",
        "train.epochs=2", "train.batch_size=32", "train.progress=false", "train.precision=fp32",
        "method.proj_hidden_dim=32", "method.proj_dim=16", "method.queue_size=64", *overrides]))


def cli_env() -> dict:
    """The CLI's environment, read when a test runs (after conftest points VIPR_CACHE at a temporary
    folder and turns tracking off; a module-level copy would miss both and write into ./.vipr)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def step_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_ctrl_c_saves_after_the_step_and_resumes_bit_for_bit(tmp_path):
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*CLI, "--out", str(cut)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    deadline = time.time() + 120
    while not (cut / "metrics.jsonl").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopped by signal 2" in err and "checkpoint saved" in err, err[-2000:]
    step = ckpt.load(cut)["state"]["step"]
    assert 0 < step < 64 and max(step_losses(cut)) == step  # saved after the step it was in, not mid-step
    resumed = subprocess.run([*CLI, "--out", str(cut), "--resume"], capture_output=True, text=True, env=cli_env(),
                             timeout=300)
    assert resumed.returncode == 0 and f"resumed from step {step} of 64" in resumed.stderr, resumed.stderr[-2000:]
    full = subprocess.run([*CLI, "--out", str(tmp_path / "full")], capture_output=True, text=True, env=cli_env(),
                          timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    assert step_losses(cut) == step_losses(tmp_path / "full")  # every step's loss, exactly
    expected, got = ckpt.load(tmp_path / "full")["state"]["model"], ckpt.load(cut)["state"]["model"]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = MoCoV2.forward_views

    def nan_at_step_5(self, views, batch):
        losses = original(self, views, batch)
        self.calls = getattr(self, "calls", 0) + 1
        return {**losses, "loss": losses["loss"] * float("nan")} if self.calls == 5 else losses

    monkeypatch.setattr(MoCoV2, "forward_views", nan_at_step_5)
    with pytest.raises(TrainingError, match=r"loss is nan at step 5 \(last finite loss [0-9.]+ at step 4\)") as err:
        run_pretrain(small_config(), tmp_path)
    assert "\n" not in str(err.value) and "train.on_nan=skip" in str(err.value)
    assert ckpt.load(tmp_path)["state"]["step"] == 3  # epoch 1's: nothing saved after the NaN
    monkeypatch.setattr(MoCoV2, "forward_views", original)
    metrics = run_pretrain(small_config("train.on_nan=skip"), tmp_path, resume=True)  # on_nan may change on resume
    assert metrics["steps"] == 6


def test_skip_trains_on_and_counts_the_skipped_steps(tmp_path, monkeypatch):
    original = MoCoV2.forward_views

    def nan_on_odd_steps(self, views, batch):
        losses = original(self, views, batch)
        self.calls = getattr(self, "calls", 0) + 1
        return {**losses, "loss": losses["loss"] * float("nan")} if self.calls % 2 else losses

    monkeypatch.setattr(MoCoV2, "forward_views", nan_on_odd_steps)
    metrics = run_pretrain(small_config("train.on_nan=skip"), tmp_path)
    assert metrics["steps"] == 6 and metrics["skipped_steps"] == 3 and metrics["loss_mean"] == metrics["loss_mean"]


def test_resume_says_where_it_continues_and_a_finished_run_that_it_is_finished(tmp_path, capsys):
    run_pretrain(small_config(), tmp_path)
    capsys.readouterr()
    metrics = run_pretrain(small_config(), tmp_path, resume=True)
    assert "already finished" in capsys.readouterr().err and metrics["steps"] == 6


def test_no_epochs_is_an_error_before_the_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        run_pretrain(small_config("train.epochs=0"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
