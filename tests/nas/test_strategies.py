"""The NAS strategy registry's contract test: every registered strategy, built by name, follows the
Strategy protocol and searches one tiny epoch end to end into a valid genotype."""

import json

import pytest

from vipr.errors import ConfigError
from vipr.nas import genotype as gt
from vipr.nas import search
from vipr.nas.strategy import Strategy, check_strategy, list_strategies, strategy_class

# sizes a strategy needs to fit the 3-cell, 4-channel supernet (P-DARTS' stages, PC-DARTS' channel split)
FITS = {"pdarts": {"stage_layers": [3], "stage_ops": [8], "skip_dropout": [0.1]}, "pcdarts": {"partial_channels": 2}}


def test_the_builtin_strategies_are_registered():
    assert {"darts", "pdarts", "pcdarts", "goldnas"} <= set(list_strategies())
    with pytest.raises(ConfigError, match="did you mean 'darts'"):
        check_strategy("dart")


@pytest.mark.parametrize("name", list_strategies())
def test_every_registered_strategy_follows_the_protocol_and_searches(name, tmp_path, monkeypatch):
    assert isinstance(strategy_class(name).uses_val_split, bool)
    built = []
    real_create = search.create_strategy
    monkeypatch.setattr(search, "create_strategy", lambda context: built.append(real_create(context)) or built[-1])
    config = search.build_config({
        "data": {"source": "builtin:shapes?classes=3&train=16&test=4&size=16", "image_size": 16},
        "network": {"channels": 4, "layers": 3},
        "train": {"batch_size": 8, "precision": "fp32", "progress": False, "num_threads": 1, "eval_batches": 1},
        "strategy": {"name": name, "epochs": 1, "warmup_epochs": 0, **FITS.get(name, {})}})
    metrics = search.run_search(config, tmp_path / name)
    [strategy] = built
    assert isinstance(strategy, Strategy)  # every member of the protocol is there
    assert metrics["strategy"] == name and metrics["steps"] >= 1
    genotype = gt.load(tmp_path / name / "genotype.json")
    assert genotype.normal.edges and genotype.reduce.edges and genotype.provenance["strategy"] == name
    assert json.loads((tmp_path / name / "metrics.json").read_text())["strategy"] == name
