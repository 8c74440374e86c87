"""Few-shot episodes: the prototype classifier, the interval, determinism, errors, the job and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vipr.cli.main import main
from vipr.errors import ConfigError
from vipr.eval import runner
from vipr.eval.fewshot import fewshot_accuracy, prototype_scores, run_fewshot

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(num_classes=8, per_class=25, dim=16, spread=0.3, seed=0):
    """Features around one random unit centre a class; ``spread`` is the noise std per dimension."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_fewshot_prototype_scores_match_loop():
    torch.manual_seed(0)
    support, query = torch.randn(3, 4, 5), torch.randn(7, 5)
    for m in range(7):
        for w in range(3):
            units = [s / s.norm() for s in support[w]]
            prototype = sum(units) / len(units)  # mean of the L2-normalised support features
            expected = float(query[m] @ prototype) / float(query[m].norm() * prototype.norm())
            assert math.isclose(float(prototype_scores(support, query)[m, w]), expected, rel_tol=1e-5, abs_tol=1e-6)


def test_fewshot_well_separated_features_score_high_with_an_interval():
    features, labels = blobs(spread=0.05)
    easy = fewshot_accuracy(features, labels, ways=5, shots=1, queries=10, episodes=50, seed=0)
    assert easy["accuracy"] > 99 and easy["eligible_classes"] == 8
    features, labels = blobs(spread=0.35)
    hard = fewshot_accuracy(features, labels, ways=5, shots=1, queries=10, episodes=50, seed=0)
    assert 30 < hard["accuracy"] < easy["accuracy"] and 0 < hard["ci95"] < 10
    assert hard["ci95"] == pytest.approx(1.96 * hard["std"] / math.sqrt(50))
    more_shots = fewshot_accuracy(features, labels, ways=5, shots=5, queries=10, episodes=50, seed=0)
    assert more_shots["accuracy"] > hard["accuracy"]  # better prototypes from more support images


def test_fewshot_episodes_are_deterministic_by_seed():
    features, labels = blobs(spread=0.4)
    a, b = (fewshot_accuracy(features, labels, ways=4, shots=2, queries=5, episodes=20, seed=7) for _ in range(2))
    assert a == b
    assert fewshot_accuracy(features, labels, ways=4, shots=2, queries=5, episodes=20, seed=8) != a


def test_fewshot_errors_name_the_option_and_the_limit():
    features, labels = blobs(num_classes=3, per_class=6)
    labels[:4] = 1  # class 0 keeps 2 images: too few for 2 shots + 2 queries
    with pytest.raises(ConfigError, match=r"--ways 4 .* only 3 classes; lower --ways to at most 3"):
        fewshot_accuracy(features, labels, ways=4, shots=1, queries=1, episodes=5)
    with pytest.raises(ConfigError, match=r"2 \+ --queries 2 = 4 images .* only 2 of the 3 .* smallest has 2"):
        fewshot_accuracy(features, labels, ways=3, shots=2, queries=2, episodes=5)
    fewshot_accuracy(features, labels, ways=2, shots=2, queries=2, episodes=5)  # the 2 large classes suffice
    for bad in ({"ways": 1}, {"shots": 0}, {"queries": 0}, {"episodes": 1}):
        settings = {"ways": 2, "shots": 1, "queries": 1, "episodes": 5, **bad}
        with pytest.raises(ConfigError, match=f"--{next(iter(bad))} must be an integer >="):
            fewshot_accuracy(features, labels, **settings)


def test_fewshot_job_extracts_test_features_once(dataset, tmp_path, monkeypatch):
    calls = []
    extract = runner.extract_features
    monkeypatch.setattr(runner, "extract_features", lambda *a, **kw: calls.append(kw["indices"]) or extract(*a, **kw))
    metrics = run_fewshot(checkpoint="random", backbone="tiny", image_size=16, data="synthetic:colours", ways=3,
                          shots=2, queries=5, episodes=30, seed=1, precision="fp32", progress=False,
                          out=tmp_path / "fs")
    assert len(calls) == 1 and len(calls[0]) == 30  # the 30 test images, once for all episodes
    assert metrics["top1"] == metrics["accuracy"] > 80  # colour classes: easy even at random init
    assert 0 <= metrics["ci95"] < 10 and (metrics["ways"], metrics["shots"], metrics["episodes"]) == (3, 2, 30)
    assert json.loads((tmp_path / "fs" / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert not (tmp_path / "fs" / "classifier.pt").exists()
    with pytest.raises(ConfigError, match="--ways 4"):
        run_fewshot(checkpoint="random", backbone="tiny", image_size=16, data="x", ways=4, progress=False)


def test_fewshot_cli_json_last_line(dataset, capsys):
    assert main(["eval", "fewshot", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16",
                 "--data", "synthetic:colours", "--ways", "3", "--shots", "1", "--queries", "4", "--episodes", "10",
                 "--seed", "3", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("fewshot 3-way 1-shot:")
    last = json.loads(out[-1])
    assert last["kind"] == "fewshot" and last["top1"] == last["accuracy"] and "ci95" in last and last["seed"] == 3
