"""`vipr nas train`: the evaluation network of a genotype trained supervised, then `vipr eval` on its checkpoint."""

import json

import pytest
import torch
import yaml

from vipr.cli.main import main
from vipr.engine import checkpoint as ckpt
from vipr.nas import train as nas_train
from vipr.nas.augment import cutout, pad_crop_flip
from vipr.nas.genotype import DARTS_V2

DATA = "builtin:shapes?size=16&train=64&test=32"
TINY = ["--data", DATA, "--epochs", "2", "--channels", "4", "--layers", "5", "--batch-size", "8",
        "--precision", "fp32", "--no-progress"]


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    return str(DARTS_V2.save(tmp_path_factory.mktemp("genotype") / "darts_v2.json"))


@pytest.fixture(scope="module")
def trained(genotype_file, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on 2 busy cores: one thread is faster (tests/conftest.py)
    out = tmp_path_factory.mktemp("runs") / "darts_v2"
    assert main(["nas", "train", genotype_file, "--out", str(out), *TINY]) == 0
    torch.set_num_threads(threads)
    return out


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_writes_a_vipr_checkpoint_that_eval_reads(trained, capsys, one_thread):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 16 and 0 <= metrics["test_top1"] <= 100 and metrics["num_test"] == 32
    assert metrics["params"] > 0 and metrics["flops"] > 0 and metrics["layers"] == 5
    card = ckpt.load_card(trained)
    assert card.architecture == "darts_net" and card.num_classes == 10 and card.image_size == 16
    assert card.architecture_kwargs["genotype"] == DARTS_V2.to_dict()
    assert card.evaluation["test_top1"] == metrics["test_top1"]
    assert json.dumps(card.to_dict())  # plain data
    config = yaml.safe_load((trained / "config.yaml").read_text())  # sectioned, as every command's
    assert config["train"]["progress"] is False  # --no-progress reached the settings
    assert config["network"]["channels"] == 4 and config["data"]["source"] == DATA and config["optim"]["lr"] == 0.025
    epochs = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines() if "epoch_seconds" in line]
    assert len(epochs) == 2 and {"ce_mean", "aux_mean", "acc_mean"} <= set(epochs[-1])
    assert main(["eval", "knn", "--checkpoint", str(trained), "--data", DATA, "--json", "--no-progress"]) == 0
    assert 0 <= last_json(capsys)["top1"] <= 100


def test_resume_after_interrupt_is_exact(trained, genotype_file, tmp_path, monkeypatch, one_thread):
    out = str(tmp_path / "resumed")
    original = nas_train.SupervisedNetwork.on_step_end

    def stop_at_step_5(self, progress):
        original(self, progress)
        if round(progress * 16) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(nas_train.SupervisedNetwork, "on_step_end", stop_at_step_5)
    assert main(["nas", "train", genotype_file, "--out", out, *TINY]) == 130
    assert ckpt.load(out)["state"]["step"] == 5
    monkeypatch.setattr(nas_train.SupervisedNetwork, "on_step_end", original)
    assert main(["nas", "train", genotype_file, "--out", out, "--resume", *TINY]) == 0
    expected, got = ckpt.load(trained)["backbone"], ckpt.load(out)["backbone"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("edit, layers, message", [
    (lambda g: g["normal"]["edges"][0].update(op="sep_conv_3x4"), "5", "unknown op 'sep_conv_3x4'"),
    (lambda g: g["normal"]["edges"][0].update(source=9), "5", "does not fit a cell of 4 nodes"),
    (lambda g: None, "2", "must be an integer in [3, 1000], got 2"),  # --layers, before the genotype is read
    (lambda g: g.update(format="other"), "5", "not a vipr genotype"),
])
def test_bad_genotype_fails_before_any_work(tmp_path, capsys, edit, layers, message):
    data = DARTS_V2.to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "never"
    args = ["nas", "train", str(path), "--out", str(out), "--layers", layers, "--data", "no/such/data"]
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_genotype_file(tmp_path, capsys):
    assert main(["nas", "train", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 1
    assert "genotype file not found" in capsys.readouterr().err


def test_cutout_and_pad_crop_flip():
    g = torch.Generator().manual_seed(0)
    holes = cutout(torch.ones(64, 3, 32, 32), 16, generator=g)
    zeros = (holes[:, 0] == 0).flatten(1).sum(1)  # pixels cut per image
    assert zeros.max() == 256 and zeros.min() >= 64  # a full 16x16 square, or one clipped at a corner
    assert torch.equal(holes[:, 0] == 0, holes[:, 2] == 0)  # the same square in every channel
    x = torch.rand(16, 3, 8, 8)
    flipped = pad_crop_flip(x, 0, generator=g)  # no padding: each sample is itself or its mirror image
    same = [torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)]
    assert all(same)
    shifted = pad_crop_flip(torch.ones(16, 3, 8, 8), 2, generator=g)
    assert shifted.shape == (16, 3, 8, 8) and (shifted == 0).any()  # zero padding shows at the border


def test_goldnas_search_then_train_then_eval(tmp_path, capsys, one_thread):
    """The whole path: a two-step GOLD-NAS search, a two-step `vipr nas train` of a genotype of its series, kNN."""
    search, out = tmp_path / "search", tmp_path / "train"
    assert main(["nas", "search", "--strategy", "goldnas", "--data", DATA, "--out", str(search), "--epochs", "1",
                 "--channels", "4", "--layers", "3", "--batch-size", "32", "--image-size", "16", "--no-progress",
                 "--set", "network.steps=3"]) == 0
    front = json.loads((search / "front.json").read_text())
    assert front[-1]["genotype"] == "genotypes/000.json" and front[-1]["flops"] > 0 and front[-1]["params"] > 0
    assert 0 <= front[-1]["val_acc"] <= 1 and front[-1]["scored_epoch"] == 1  # the runner's supernet accuracy
    genotype = search / front[-1]["genotype"]
    assert main(["nas", "train", str(genotype), "--out", str(out), "--data", DATA, "--epochs", "2", "--batch-size", "32",
                 "--channels", "4", "--precision", "fp32", "--no-progress", "--json"]) == 0
    metrics = last_json(capsys)
    assert metrics["layers"] == 3 and metrics["steps"] == 4  # the per-cell genotype fixes the cell count
    assert metrics["flops"] == front[-1]["flops"] and metrics["params"] == front[-1]["params"]
    assert main(["eval", "knn", "--checkpoint", str(out), "--data", DATA, "--json", "--no-progress"]) == 0
    assert 0 <= last_json(capsys)["top1"] <= 100
