"""Pre-training reads an image folder through the encoded store: crops cut at decode, neighbours decoded, exact resume."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from vipr.config import apply_overrides
from vipr.data.stores import choose_store, default_store_size, open_training_dataset
from vipr.engine import checkpoint as ckpt
from vipr.engine.trainer import Trainer
from vipr.errors import ConfigError, DataError, Interrupted
from vipr.pretrain import build_config, run_pretrain


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for label in range(2):
            (root / split / f"c{label}").mkdir(parents=True)
            for i in range(n):
                base = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) // (1 + label)
                Image.fromarray(base).resize((50, 40), Image.Resampling.BICUBIC).save(root / split / f"c{label}" / f"{i}.jpg")
    return root


def _config(root, *overrides, method="moco_v2", extra=()):
    base = [f"data.source={root}", "data.store=encoded", "data.image_size=16", "model.backbone=tiny",
            f"method.name={method}", "train.epochs=2", "train.batch_size=16", "train.progress=false",
            "train.precision=fp32", "method.proj_hidden_dim=32", "method.proj_dim=16", "method.queue_size=32"]
    if method == "clim":
        base += ["method.warmup_epochs=1", "method.refresh_every=1", "method.neighbours=4"]
    return build_config(apply_overrides({}, base + list(extra) + list(overrides)))


@pytest.mark.parametrize("method,stream", [("moco_v2", False), ("clim", False), ("moco_v2", True)])
def test_encoded_pretraining_resumes_exactly(jpegs, tmp_path, monkeypatch, method, stream):
    """clim: a feature bank and neighbour images, decoded on read; stream: shards in sequence, a shuffle buffer."""
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    extra = ["data.shuffle_buffer=8"] if stream else []
    config = functools.partial(_config, extra=extra)
    metrics = run_pretrain(config(jpegs, method=method), tmp_path / "full")
    assert metrics["steps"] == 6 and np.isfinite(metrics["loss_mean"])  # 48 images / 16 a step, 2 epochs
    full = ckpt.load(tmp_path / "full" / "checkpoint.pt")["state"]["model"]
    original = Trainer.train_step

    def interrupt_at_step_4(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_4)
    with pytest.raises(Interrupted):
        run_pretrain(config(jpegs, method=method), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    run_pretrain(config(jpegs, method=method), tmp_path / "cut", resume=True)
    resumed = ckpt.load(tmp_path / "cut" / "checkpoint.pt")["state"]["model"]
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_streaming_needs_the_encoded_store(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    bad = build_config(apply_overrides({}, ["data.source=builtin:shapes?train=64&test=16&size=16", "data.image_size=16",
                                            "model.backbone=tiny", "train.epochs=1", "train.batch_size=16",
                                            "train.progress=false", "data.shuffle_buffer=8"]))
    with pytest.raises(ConfigError, match="data.shuffle_buffer streams the shards of the encoded store"):
        run_pretrain(bad, tmp_path / "run")


def test_auto_picks_raw_within_the_budget_encoded_beyond(jpegs):
    side = default_store_size(224)
    assert side == 256 and default_store_size(32) == 64
    raw_bytes = 64 * 3 * side * side  # 64 files
    assert choose_store(str(jpegs), "auto", side, raw_budget_gb=raw_bytes / 1e9) == "raw"
    assert choose_store(str(jpegs), "auto", side, raw_budget_gb=(raw_bytes - 1) / 1e9) == "encoded"
    assert choose_store("builtin:digits", "auto", 32, raw_budget_gb=1e-9) == "raw"  # arrays stay arrays
    with pytest.raises(DataError, match="data.store=encoded takes an image folder"):
        choose_store("builtin:digits", "encoded", 32, None)


@pytest.mark.parametrize("store", ["raw", "encoded"])
def test_auto_store_lists_the_folder_once(jpegs, tmp_path, monkeypatch, store):
    """Choosing the store and opening it share one listing (a stat per file: 20 s at ImageNet's size)."""
    from vipr.data import sources

    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    calls = []
    real = sources._list_folder
    monkeypatch.setattr(sources, "_list_folder", lambda root: calls.append(root) or real(root))
    budget = 1e3 if store == "raw" else 1e-9  # GB: the raw store fits, or does not
    _, kind = open_training_dataset(str(jpegs), store="auto", store_size=None, image_size=16, raw_budget_gb=budget,
                                    progress=False)
    assert kind == store and len(calls) == 1
    sources.list_folder(jpegs)  # outside a training open: listed afresh
    assert len(calls) == 2


def test_encoded_dataset_reads_like_the_raw_store(jpegs, tmp_path, monkeypatch):
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    raw, kind_raw = open_training_dataset(str(jpegs), store="raw", store_size=None, image_size=32, progress=False)
    enc, kind_enc = open_training_dataset(str(jpegs), store="encoded", store_size=None, image_size=32, progress=False)
    assert (kind_raw, kind_enc) == ("raw", "encoded") and enc.classes == raw.classes
    assert enc.train.images.shape == raw.train.images.shape == (48, 3, 64, 64)
    np.testing.assert_array_equal(enc.train.labels, raw.train.labels)
    # the same centred square, decoded at a DCT-reduced scale or not: within a few grey levels
    diff = np.abs(enc.train.images[:8].astype(float) - np.asarray(raw.train.images[:8], dtype=float)).mean()
    assert diff < 6, diff


def test_webdataset_shards_made_elsewhere_train_in_place(tmp_path, monkeypatch):
    import io
    import tarfile

    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    shards = tmp_path / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 32), ("val", 8)):
        with tarfile.open(shards / f"{split}-000000.tar", "w") as tar:
            for i in range(count):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
                for name, data in ((f"sample{i:04d}.png", buffer.getvalue()), (f"sample{i:04d}.cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(f"{split}/{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    dataset, kind = open_training_dataset(str(shards), store_size=None, image_size=16, progress=False)
    assert kind == "encoded" and dataset.classes == ["0", "1", "2"] and len(dataset.test) == 8
    np.testing.assert_array_equal(dataset.train.labels[:4], [0, 1, 2, 0])
    metrics = run_pretrain(_config(shards, "train.epochs=1", "data.store=auto"), tmp_path / "run")
    assert metrics["steps"] == 2 and np.isfinite(metrics["loss_mean"])


def test_data_info_reports_each_stores_size_and_autos_choice(jpegs, tmp_path, monkeypatch, capsys):
    from vipr.cli.main import main
    from vipr.data.stores import store_estimates

    estimates = store_estimates(str(jpegs))
    files = sorted(jpegs.rglob("*.jpg"))
    assert estimates["files"] == len(files) == 64
    assert estimates["encoded_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6)
    assert [(r["crop"], r["store_side"], r["raw_mb"]) for r in estimates["raw"]] == \
        [(32, 64, 64 * 3 * 64 * 64 / 1e6), (224, 256, 64 * 3 * 256 * 256 / 1e6)]
    assert store_estimates("builtin:digits") is None
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    assert main(["data", "info", str(jpegs)]) == 0
    assert "crop 224 px: raw at 256 px 12.6 MB -> data.store=auto reads raw" in capsys.readouterr().out
