"""Short CPU pre-training runs: every method, exact resume, signals, run-folder contents."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vipr.config import apply_overrides
from vipr.distill.settings import distill_methods
from vipr.engine import checkpoint as ckpt
from vipr.engine.card import Parent
from vipr.engine.trainer import Interrupted, Trainer
from vipr.errors import CheckpointError, ViprError
from vipr.models.loading import load_backbone
from vipr.pretrain import build_config, run_pretrain
from vipr.ssl import list_methods

SMALL_DATA = "builtin:shapes?train=96&test=32&size=16"
NEIGHBOUR_METHODS = ("clim", "hsa", "scan")


def small_config(*overrides, method="moco_v2"):
    base = [f"data.source={SMALL_DATA}", "data.image_size=16", "model.backbone=tiny", f"method.name={method}",
            "train.epochs=2", "train.batch_size=32", "train.progress=false", "train.precision=fp32",
            "method.proj_hidden_dim=32", "method.proj_dim=16"]
    if method in ("moco_v2", *NEIGHBOUR_METHODS):
        base.append("method.queue_size=64")
    if method in NEIGHBOUR_METHODS:  # the first feature bank at epoch 1 of 2, so the neighbour step runs
        base += ["method.warmup_epochs=1", "method.refresh_every=1", "method.neighbours=4"]
    return build_config(apply_overrides({}, base + list(overrides)))


@pytest.mark.parametrize("method", [m for m in list_methods() if m not in distill_methods()])  # tests/distill: a teacher
def test_every_method_trains_two_epochs(method, tmp_path):
    metrics = run_pretrain(small_config(method=method), tmp_path)
    assert metrics["steps"] == 6  # 96 images / 32 per step, 2 epochs
    assert torch.isfinite(torch.tensor(metrics["loss_mean"]))
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 6
    for name in ("config.yaml", "env.json", "metrics.jsonl", "checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    backbone, card = load_backbone(tmp_path)
    assert card.method == method and card.image_size == 16 and len(card.classes) == 10
    assert backbone.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, backbone.feature_dim)


def _final_state(path):
    return ckpt.load(path / "checkpoint.pt")["state"]["model"]


@pytest.mark.parametrize("method", ["moco_v2", "clim"])  # clim: feature bank, clusters and neighbour table
def test_resume_is_exact(method, tmp_path, monkeypatch):
    run_pretrain(small_config(method=method), tmp_path / "full")
    full = _final_state(tmp_path / "full")

    original = Trainer.train_step

    def interrupt_at_step_4(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_4)
    with pytest.raises(Interrupted, match="step 4"):
        run_pretrain(small_config(method=method), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    assert ckpt.load(tmp_path / "cut" / "checkpoint.pt")["state"]["step"] == 4
    run_pretrain(small_config(method=method), tmp_path / "cut", resume=True)
    resumed = _final_state(tmp_path / "cut")
    assert resumed.keys() == full.keys()
    if method == "clim":  # the bank is in the checkpoint; the loop below compares it, restored, bit for bit
        assert len(full["table._extra_state"]["features"]) == 96  # one row per train image
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_resume_guards(tmp_path):
    with pytest.raises(ViprError, match="--resume"):
        run_pretrain(small_config(), tmp_path, resume=True)
    run_pretrain(small_config("train.epochs=1"), tmp_path)
    with pytest.raises(ViprError, match="already holds a run"):
        run_pretrain(small_config("train.epochs=1"), tmp_path)
    with pytest.raises(CheckpointError, match="another configuration"):
        run_pretrain(small_config("train.epochs=1", "optim.lr=0.01"), tmp_path, resume=True)


def test_sigterm_saves_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vipr.cli.main", "pretrain", "--data", SMALL_DATA.replace("train=96", "train=512"),
           "--backbone", "tiny", "--image-size", "16", "--epochs", "50", "--batch-size", "32", "--out", str(out),
           "--no-progress", "--set", "train.checkpoint_every=0", "method.queue_size=64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err
    step = ckpt.load(out / "checkpoint.pt")["state"]["step"]
    assert 0 < step < 50 * 16


@pytest.mark.slow
def test_compiled_run_trains_and_saves_plain_keys(tmp_path):
    """train.compile really compiles (Module.compile in place), and checkpoints keep plain keys."""
    run_pretrain(small_config("train.compile=true", "train.epochs=1"), tmp_path)
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert not any("_orig_mod" in key for key in saved["state"]["model"])
    backbone, _ = load_backbone(tmp_path)
    assert backbone.forward_features(torch.randn(1, 3, 16, 16)).shape[1] == backbone.feature_dim


def test_parent_record_is_absolute_with_hash(tmp_path, monkeypatch):
    run_pretrain(small_config("train.epochs=1"), tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    record = ckpt.parent_record("run")
    assert record.checkpoint == str((tmp_path / "run" / "checkpoint.pt").resolve())
    assert record.sha256 == ckpt.file_sha256(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.parent_record("random") == Parent("random")


@pytest.mark.parametrize("method", ["scan", "supcon"])
def test_label_split_hides_the_other_labels(method, tmp_path):
    """With method.label_split only the split's images keep a label: the rest train as unlabelled."""
    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split, save_label_split
    from vipr.pretrain import train_labels

    dataset = open_dataset(SMALL_DATA)
    split = tmp_path / "split.json"
    keep = make_label_split(dataset.train.labels, per_class=2)
    save_label_split(split, keep, dataset, per_class=2)
    config = small_config(f"method.label_split={split}", method=method)
    labels = train_labels(config, dataset)
    assert (labels[keep] == dataset.train.labels[keep]).all() and (labels >= 0).sum() == len(keep) == 20
    metrics = run_pretrain(config, tmp_path / "run")
    assert metrics["steps"] == 6 and torch.isfinite(torch.tensor(metrics["loss_mean"]))
    if method == "scan":  # positives only among the 20 labelled anchors' same-label neighbours
        table = ckpt.load(tmp_path / "run")["state"]["model"]["table._extra_state"]
        anchors_with_positives = table["candidates"].any(1).nonzero().flatten()
        assert 0 < len(anchors_with_positives) and set(anchors_with_positives.tolist()) <= set(keep.tolist())
