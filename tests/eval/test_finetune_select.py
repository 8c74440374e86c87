"""`vipr eval finetune --strategy auto`: the full fine-tune or the frozen features' linear probe, chosen on
held-out labels."""

import numpy as np
import pytest
import torch

from vipr.engine.trainer import Interrupted
from vipr.errors import ConfigError
from vipr.eval import finetune_select
from vipr.eval.features import load_eval_backbone
from vipr.eval.finetune import run_finetune
from vipr.eval.finetune_select import choose, holdout_rows
from vipr.eval.linear import train_linear
from vipr.models import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 16  # pixels
FEATURES = dict(image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), precision="fp32")
RUN = dict(checkpoint="random", backbone="tiny", image_size=SIZE, data="synthetic:colours", epochs=3, min_steps=0,
           batch_size=16, precision="fp32", progress=False)


def test_holdout_rows_hold_out_a_fifth_of_each_class_and_keep_singletons():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 1 + [3] * 2)
    fit, held = holdout_rows(labels, seed=3)
    assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(len(labels)))  # a partition
    counts = {c: int((labels[held] == c).sum()) for c in range(4)}
    assert counts == {0: 2, 1: 1, 2: 0, 3: 1}  # round(0.2 n), at least one where n >= 2, none of a single image
    assert not np.array_equal(holdout_rows(labels, seed=4)[1], held)  # the seed draws which


def _perfect_finetune(trial, split):
    """A stand-in for the recipe that leaves the backbone and fits an exact head on its features."""
    from vipr.eval.features import extract_features

    features = extract_features(trial, split.images, progress=False, **FEATURES)
    trial.head = train_linear(features, torch.from_numpy(split.labels).long(), 3, epochs=200)


def _broken_finetune(trial, split):
    """A stand-in for a fine-tune that loses everything: a head that always answers class 0."""
    trial.head = _chance_head(trial, split, 3)


def test_choose_keeps_the_probe_against_a_fine_tune_that_loses_and_leaves_the_model(colour_split):
    model, split = create_backbone("tiny"), colour_split(30, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    chosen = choose(model, split, 3, 0, _broken_finetune, **FEATURES)
    assert chosen["chosen"] == "probe" and chosen["heldout"] == 6  # round(0.2 * 10) of each class
    assert chosen["heldout_top1"]["full"] == pytest.approx(100 / 3, abs=0.01)  # class 0 is a third of them
    assert chosen["heldout_top1"]["probe"] > 80  # the tints separate through a random-init backbone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_choose_takes_the_fine_tune_when_the_probe_scores_lower(colour_split, monkeypatch):
    monkeypatch.setattr(finetune_select, "probe_head", _chance_head)
    chosen = choose(create_backbone("tiny"), colour_split(30, 0), 3, 0, _perfect_finetune, **FEATURES)
    assert chosen["chosen"] == "full" and chosen["heldout_top1"]["full"] > chosen["heldout_top1"]["probe"]


def test_choose_without_two_images_of_any_class_runs_the_full_fine_tune(colour_split):
    called = []
    chosen = choose(create_backbone("tiny"), colour_split(3, 0), 3, 0, lambda m, s: called.append(1), **FEATURES)
    assert chosen == {"chosen": "full", "heldout": 0, "heldout_top1": {}} and not called


def test_auto_probe_saves_the_frozen_backbone_and_its_probe(dataset, tmp_path, reload_classifier, monkeypatch):
    """When the probe wins, classifier.pt is the start's backbone with the probe fitted on every label, and it
    reproduces the reported top-1."""
    monkeypatch.setattr("vipr.eval.finetune.choose", lambda *a, **k: {"chosen": "probe", "heldout": 6,
                                                                       "heldout_top1": {"full": 0.0, "probe": 1.0}})
    metrics = run_finetune(**RUN, out=tmp_path / "ft", strategy="auto")
    assert metrics["chosen"] == "probe" and metrics["steps"] == 0 and metrics["strategy"] == "auto"
    model, card, top1 = reload_classifier(tmp_path / "ft" / "classifier.pt", dataset)
    assert top1 == pytest.approx(metrics["top1"], abs=1e-6) and top1 > 80
    initial, _ = load_eval_backbone("random", "tiny", SIZE)
    assert all(torch.equal(p, q) for (n, p), (_, q) in zip(model.named_parameters(), initial.named_parameters())
               if not n.startswith("head"))
    assert not (tmp_path / "ft" / "train").exists()


def test_auto_end_to_end_reports_its_choice(dataset):
    metrics = run_finetune(**RUN, strategy="auto")
    assert metrics["chosen"] in ("full", "probe") and metrics["heldout"] == 12  # 4 of each class's 20
    full, probe = metrics["heldout_top1"]["full"], metrics["heldout_top1"]["probe"]
    assert metrics["chosen"] == ("full" if full > probe else "probe")


@pytest.mark.parametrize("stop_after", [2, 30])  # in the trial fine-tune (48 images: steps 1-24); in the final one
def test_auto_resume_after_a_stop_is_exact(dataset, tmp_path, monkeypatch, sigint_after, stop_after):
    monkeypatch.setattr("vipr.eval.finetune_select.probe_head", _chance_head)  # the fine-tune wins: two runs
    run = {**RUN, "epochs": 8}  # 3 steps an epoch; fewer leave the fine-tune at chance on these images
    straight = run_finetune(**run, out=tmp_path / "straight", strategy="auto")
    assert straight["chosen"] == "full" and not (tmp_path / "straight" / "train").exists()
    sigint_after(stop_after)
    with pytest.raises(Interrupted, match="signal 2"):
        run_finetune(**run, out=tmp_path / "cut", strategy="auto")
    sigint_after(None)
    in_trial = stop_after <= 24
    assert (tmp_path / "cut" / "train" / "select" / "checkpoint.pt").is_file() == in_trial
    assert (tmp_path / "cut" / "train" / "selection.json").is_file() != in_trial
    resumed = run_finetune(**run, out=tmp_path / "cut", strategy="auto", resume=True)
    assert not (tmp_path / "cut" / "train").exists()
    for key in ("top1", "top5", "train_loss", "steps", "chosen", "heldout_top1"):
        assert resumed[key] == straight[key], key


def _chance_head(model, split, num_classes, **features):
    """A head that always answers class 0 (a probe_head stand-in that scores chance)."""
    head = torch.nn.Linear(model.feature_dim, num_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    return head


def test_unknown_strategy_is_one_line():
    with pytest.raises(ConfigError, match="strategy must be one of full, auto, got 'best'"):
        run_finetune(**RUN, strategy="best")
