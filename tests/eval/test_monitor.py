"""Online kNN monitoring of pre-training (train.knn_every, train.keep_best): logged, kept, resumed exactly."""

import json

import numpy as np
import pytest
import torch

from vipr.config import ConfigValueError, apply_overrides
from vipr.data.types import Dataset, ImageSplit
from vipr.engine import checkpoint as ckpt
from vipr.engine.trainer import Interrupted, Trainer
from vipr.errors import ConfigError, DataError
from vipr.eval.monitor import build_monitor
from vipr.models.loading import load_backbone
from vipr.pretrain import build_config, run_pretrain

MONITORED = ("train.knn_every=1", "train.keep_best=true")


def small_config(*overrides):
    """MoCo v2 on 96 images of 16 px, 3 steps an epoch, 2 epochs (as tests/engine/test_trainer.py)."""
    return build_config(apply_overrides({}, [
        "data.source=builtin:shapes?train=96&test=32&size=16", "data.image_size=16", "model.backbone=tiny",
        "train.epochs=2", "train.batch_size=32", "train.progress=false", "train.precision=fp32",
        "method.proj_hidden_dim=32", "method.proj_dim=16", "method.queue_size=64", *overrides]))


def knn_records(run):
    """The probe's figures of each epoch record that has them (epoch, step, knn_*)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k in ("epoch", "step") or k.startswith("knn_")} for r in records
            if "knn_top1" in r]


def test_two_epochs_log_two_knn_figures_and_keep_the_best(tmp_path):
    metrics = run_pretrain(small_config(*MONITORED), tmp_path)
    records = knn_records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["step"] == 3 * r["epoch"] and 0 <= r["knn_top1"] <= 100 for r in records)
    best = max(r["knn_top1"] for r in records)
    assert metrics["knn_best_top1"] == best and metrics["best_checkpoint"] == str(tmp_path / "best.pt")
    backbone, card = load_backbone(tmp_path / "best.pt")  # a checkpoint like any other
    assert card.evaluation["kind"] == "knn" and card.evaluation["top1"] == best
    assert card.evaluation["epoch"] == next(r["epoch"] for r in records if r["knn_top1"] == best)
    assert backbone.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, backbone.feature_dim)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_every_n_epochs_and_no_best_without_keep_best(tmp_path):
    run_pretrain(small_config("train.knn_every=2"), tmp_path)
    assert [r["epoch"] for r in knn_records(tmp_path)] == [2]
    assert not (tmp_path / "best.pt").exists()


def test_resume_stays_exact_with_the_monitor_on(tmp_path, monkeypatch):
    run_pretrain(small_config(*MONITORED), tmp_path / "full")
    original = Trainer.train_step

    def interrupt_at_step_4(self, batch):  # in epoch 2, after epoch 1's probe
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_4)
    with pytest.raises(Interrupted, match="step 4"):
        run_pretrain(small_config(*MONITORED), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    metrics = run_pretrain(small_config(*MONITORED), tmp_path / "cut", resume=True)
    full, cut = (ckpt.load(tmp_path / name / "checkpoint.pt")["state"]["model"] for name in ("full", "cut"))
    for key in full:
        torch.testing.assert_close(cut[key], full[key], rtol=0, atol=0, msg=key)
    assert knn_records(tmp_path / "cut") == knn_records(tmp_path / "full")  # the same figures, the same best
    assert metrics["knn_best_top1"] == max(r["knn_top1"] for r in knn_records(tmp_path / "full"))


def test_a_monitor_leaves_training_as_it_was(tmp_path):
    """The probe draws no random numbers and changes no weight: the losses equal a run without it."""
    run_pretrain(small_config(*MONITORED), tmp_path / "on")
    run_pretrain(small_config(), tmp_path / "off")
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text()
                                                  .splitlines()) if "loss" in r} for name in ("on", "off")]
    assert losses[0] == losses[1]


def test_knn_every_is_a_declared_range_and_a_run_only_key():
    with pytest.raises(ConfigValueError, match="train.knn_every"):
        small_config("train.knn_every=-1")
    with pytest.raises(ConfigValueError, match="train.knn_k"):
        small_config("train.knn_k=0")
    from vipr.pretrain import config_hash

    assert config_hash(small_config(*MONITORED)) == config_hash(small_config())  # a resume may turn it on


def _dataset(train_labels, test_labels):
    images = np.zeros((len(train_labels), 3, 8, 8), np.uint8)
    test = None if test_labels is None else ImageSplit(np.zeros((len(test_labels), 3, 8, 8), np.uint8),
                                                       np.asarray(test_labels, np.int64))
    return Dataset("mine", ImageSplit(images, np.asarray(train_labels, np.int64)), test, [], "0")


@pytest.mark.parametrize("train, test, message", [
    ([-1, -1], [0, 1], "the train split of mine has no labels"),
    ([0, 1], [-1, -1], "the test split of mine has no labels"),
    ([0, 1], None, "mine has none"),
])
def test_a_source_without_labels_is_one_line_naming_the_key(train, test, message, tmp_path):
    with pytest.raises(DataError, match=message) as err:
        build_monitor(small_config("train.knn_every=3"), _dataset(train, test), tmp_path, False, "fp32", (0,) * 3,
                      (1,) * 3)
    assert "train.knn_every=3" in str(err.value) and "\n" not in str(err.value)


def test_keep_best_needs_a_probe(tmp_path):
    with pytest.raises(ConfigError, match="train.knn_every"):
        build_monitor(small_config("train.keep_best=true"), _dataset([0], [0]), tmp_path, False, "fp32", (0,) * 3,
                      (1,) * 3)
