"""End-to-end searches on CPU at tiny size: every strategy through the CLI, exact resume, bad input."""

import json
import os
import signal

import pytest
import torch

from vipr.cli.main import main
from vipr.engine.trainer import Interrupted
from vipr.errors import CheckpointError
from vipr.nas import genotype as gt
from vipr.nas import search

DATA = "builtin:shapes?classes=3&train=16&test=4&size=16"  # 8 weight + 8 alpha images: 1 step an epoch
TINY = ["--data", DATA, "--channels", "4", "--layers", "3", "--batch-size", "8", "--image-size", "16",
        "--epochs", "2", "--warmup-epochs", "0", "--precision", "fp32", "--no-progress", "--json",
        "--set", "train.num_threads=1", "train.eval_batches=1"]
PDARTS = ["strategy.stage_layers=[3,4]", "strategy.stage_ops=[8,4]", "strategy.skip_dropout=[0.1,0.2]"]


@pytest.mark.parametrize("strategy, extra", [
    ("darts", ["--order", "1"]),
    ("darts", ["--order", "2"]),
    ("pdarts", ["--epochs", "1", "--set", *PDARTS]),
    ("pcdarts", ["--channels", "8", "--set", "strategy.partial_channels=4"]),
])
def test_two_step_search_writes_a_valid_genotype(tmp_path, capsys, strategy, extra):
    out = tmp_path / strategy
    assert main(["nas", "search", "--strategy", strategy, "--out", str(out), *TINY, *extra]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and metrics["strategy"] == strategy
    genotype = gt.load(out / "genotype.json")
    assert len(genotype.normal.edges) == 8 and len(genotype.reduce.edges) == 8
    prov = genotype.provenance
    assert prov["strategy"] == strategy and prov["dataset"] == DATA and len(prov["data_digest"]) > 8
    assert prov["seed"] == 0 and prov["epochs"] == 2
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all("genotype" in r and "arch_loss_mean" in r for r in lines)
    if strategy == "pdarts":
        assert [r["layers"] for r in lines] == [3, 4]
        state = torch.load(out / "checkpoint.pt", weights_only=False)["state"]["model"]["strategy"]
        assert state["stage"] == 1 and all(len(c) == 4 for c in state["candidates"][0])
        assert sum(e.op == "skip_connect" for e in genotype.normal.edges) <= 2


def tiny_config(**train):
    return search.build_config({
        "data": {"source": "builtin:shapes?classes=3&train=32&test=4&size=16", "image_size": 16},
        "network": {"channels": 4, "layers": 3},
        "train": {"batch_size": 8, "precision": "fp32", "progress": False, "num_threads": 1, "eval_batches": 1,
                  **train},
        "strategy": {"name": "pdarts", "epochs": 1, "warmup_epochs": 0, "stage_layers": [3, 4],
                     "stage_ops": [8, 4], "skip_dropout": [0.3, 0.3]}})


def test_resume_after_sigterm_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    config = tiny_config()  # 2 stages x 1 epoch x 2 steps; stopped mid-epoch in the second stage
    search.run_search(config, tmp_path / "straight")

    real_create, calls = search.create_strategy, []

    def create_with_sigterm(context):
        strategy = real_create(context)
        weight_step = strategy.weight_step

        def step(train):
            stats = weight_step(train)
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler saves after this step
            return stats

        strategy.weight_step = step
        return strategy

    monkeypatch.setattr(search, "create_strategy", create_with_sigterm)
    with pytest.raises(Interrupted, match="signal"):
        search.run_search(config, tmp_path / "resumed")
    monkeypatch.setattr(search, "create_strategy", real_create)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["state"]["step"] == 3
    search.run_search(config, tmp_path / "resumed", resume=True)

    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["state"] for name in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4
    for key, value in a["model"]["strategy"]["search"]["model"].items():
        assert torch.equal(value, b["model"]["strategy"]["search"]["model"][key]), key
    assert (tmp_path / "straight" / "genotype.json").read_text() == (tmp_path / "resumed" / "genotype.json").read_text()


@pytest.mark.parametrize("args, message", [
    (["--strategy", "dart"], "unknown strategy 'dart' (did you mean 'darts'?)"),
    (["--strategy", "pcdarts", "--channels", "6"], "divisible by partial_channels K=4"),
    (["--layers", "2"], "must be an integer in [3, 1000], got 2"),
    (["--set", "strategy.oder=2"], "unknown config key 'strategy.oder' (did you mean 'strategy.order'?)"),
    (["--set", "strategy.name=pdarts", "strategy.stage_ops=[8,9,3]"], "never grow"),
    (["--warmup-epochs", "80"], "warmup_epochs <= epochs"),
    (["--set", "data.train_portion=1.5"], "'data.train_portion' must be a number in (0, 1], got 1.5"),
])
def test_bad_input_is_a_clear_error_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["nas", "search", "--out", str(out), "--data", DATA, *args]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_resume_without_checkpoint_and_rerun_into_a_used_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["nas", "search", "--out", str(out), *TINY, "--resume"]) == 1
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["nas", "search", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["nas", "search", "--out", str(out), *TINY]) == 1  # no --resume: the finished run is kept
    assert "already holds a run" in capsys.readouterr().err


def search_config(strategy: dict):
    """3 epochs of 2 steps (16 weight + 16 alpha images, batch 8; GOLD-NAS: 4 steps of all 32)."""
    return search.build_config({
        "data": {"source": "builtin:shapes?classes=3&train=32&test=4&size=16", "image_size": 16},
        "network": {"channels": 4, "layers": 3},
        "train": {"batch_size": 8, "precision": "fp32", "progress": False, "num_threads": 1, "eval_batches": 1,
                  "seed": 2},
        "strategy": strategy})


@pytest.mark.parametrize("strategy, stop_after", [
    ({"name": "darts", "epochs": 3, "warmup_epochs": 1, "order": 2}, 3),  # mid-epoch, second order
    ({"name": "darts", "epochs": 3, "warmup_epochs": 0, "order": 1}, 4),  # the last step of epoch 2
    ({"name": "goldnas", "epochs": 3}, 5),  # one level: both optimizers in one step
])
def test_resume_is_exact_for_a_search_through_the_engine(tmp_path, monkeypatch, strategy, stop_after):
    """Stopped after N steps and resumed, a search ends with the alphas, weights and both optimizers'
    states of an uninterrupted run, bit for bit."""
    config = search_config(strategy)
    search.run_search(config, tmp_path / "straight")
    steps = []
    real_step = search.SearchTask.training_step

    def step_then_signal(self, batch):
        losses = real_step(self, batch)
        steps.append(1)
        if len(steps) == stop_after:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: recorded, acted on after this step
        return losses

    monkeypatch.setattr(search.SearchTask, "training_step", step_then_signal)
    with pytest.raises(Interrupted, match="signal 2"):
        search.run_search(config, tmp_path / "resumed")
    monkeypatch.undo()
    cut = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert cut["format"] == search.FORMAT and cut["state"]["step"] == stop_after
    search.run_search(config, tmp_path / "resumed", resume=True)

    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["state"] for name in ("straight", "resumed"))
    assert a["step"] == b["step"]
    assert_same(a["model"], b["model"])  # supernet weights, alpha, pruning state
    assert_same(a["optimizers"], b["optimizers"])  # SGD momentum of the weights, alpha's Adam / SGD
    assert sorted(a["optimizers"]) == ["alpha", "weights"]
    straight, resumed = (epoch_records(tmp_path / name) for name in ("straight", "resumed"))
    per_epoch = straight[0]["step"]
    for x, y in zip(straight, resumed, strict=True):  # every epoch's record: losses, lr, val acc, genotype
        cut_in_epoch = x["step"] - per_epoch < stop_after < x["step"]  # its means cover the steps after the resume
        assert x == y if not cut_in_epoch else {k: v for k, v in x.items() if not k.endswith("_mean")} == \
            {k: v for k, v in y.items() if not k.endswith("_mean")}
    assert (tmp_path / "straight" / "genotype.json").read_text() == (tmp_path / "resumed" / "genotype.json").read_text()


def epoch_records(run) -> list[dict]:
    """metrics.jsonl's records without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("epoch_seconds", "images_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same(a, b, where="state"):
    """Nested dicts / lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_search_checkpoint_of_the_loop_before_the_engine_is_refused_in_one_line(tmp_path):
    config = search_config({"name": "darts", "epochs": 1})
    search.run_search(config, tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save({**saved, "format": search.FORMAT_V1}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="older vipr .*start the search again") as err:
        search.run_search(config, tmp_path, resume=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("strategy, expected", [
    ({"name": "pcdarts", "epochs": 10}, 3),  # the authors' 15 of 50
    ({"name": "pdarts", "epochs": 5}, 2),  # 10 of 25 per stage
    ({"name": "darts", "epochs": 5}, 0),
    ({"name": "pcdarts", "epochs": 10, "warmup_epochs": 7}, 7),  # given: kept as it is
    ({"name": "pcdarts"}, 15),
])
def test_epochs_alone_keep_the_strategys_share_of_warmup(strategy, expected):
    assert search.build_config({"strategy": strategy}).strategy.warmup_epochs == expected
