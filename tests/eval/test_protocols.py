"""The evaluation-protocol registry: every registered protocol runs and writes its run folder."""

import json

import pytest

from vipr.errors import ConfigError
from vipr.eval import protocols
from vipr.eval.protocols import get_protocol, list_protocols, register_protocol

SIZE = 16  # px, the colour dataset's side (tests/eval/conftest.py)
FAST = {"finetune": {"epochs": 1, "min_steps": 2, "batch_size": 16},  # speed only; every protocol runs
        "fewshot": {"ways": 3, "shots": 2, "queries": 3, "episodes": 5}}


@pytest.mark.parametrize("name", list_protocols())
def test_every_registered_protocol_scores_and_writes_its_run(name, dataset, tmp_path):
    protocol = get_protocol(name)
    assert protocol.summary and callable(protocol.runner())
    metrics = protocol.run(checkpoint="random", data="synthetic:colours", backbone="tiny", image_size=SIZE,
                           out=tmp_path / name, precision="fp32", progress=False, **FAST.get(name, {}))
    assert 0 <= metrics["top1"] <= 100 and metrics["kind"] == name
    assert protocol.headline.format(**metrics)  # the line vipr eval prints
    assert json.loads((tmp_path / name / "metrics.json").read_text())["top1"] == metrics["top1"]
    assert (tmp_path / name / "classifier.pt").is_file() == protocol.classifier


def test_unknown_protocol_suggests_and_a_new_one_registers(monkeypatch):
    with pytest.raises(ConfigError, match="did you mean 'knn'"):
        get_protocol("kn")
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))  # the registration stays in this test
    register_protocol("knn20", "kNN with 20 neighbours", "vipr.eval.runner:run_eval", kind="knn", k=20)
    assert list_protocols()[-1] == "knn20" and dict(get_protocol("knn20").fixed) == {"kind": "knn", "k": 20}
    with pytest.raises(ValueError, match="twice"):
        register_protocol("knn20", "again", "vipr.eval.runner:run_eval")
