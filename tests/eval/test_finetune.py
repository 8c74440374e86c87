"""`vipr eval finetune`: the whole network trained on labelled images, saved as a loadable classifier."""

import json
import math

import pytest
import torch

from vipr.cli.main import main
from vipr.data.splits import make_label_split, save_label_split
from vipr.engine.trainer import Interrupted
from vipr.errors import CheckpointError, ConfigError, ViprError
from vipr.eval.features import load_eval_backbone
from vipr.eval.features import extract_features
from vipr.eval.finetune import BACKBONE_LR_SCALE, _probe_head, finetune, finetune_optimizer, run_finetune
from vipr.models import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 16  # pixels, the side of the conftest's colour images


def test_finetune_optimizer_gives_the_backbone_a_tenth_of_the_head_lr():
    model = create_backbone("tiny", num_classes=3)
    optimizer = finetune_optimizer(model, lr=0.02)
    head = {id(p) for p in model.head.parameters()}
    seen = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(0.02 if id(p) in head else 0.02 * BACKBONE_LR_SCALE)
            assert group["weight_decay"] == (5e-4 if p.ndim > 1 else 0.0)
            assert group["nesterov"] and group["momentum"] == 0.9


def test_finetune_classifier_round_trips_and_reproduces_top1(dataset, tmp_path, reload_classifier):
    split = tmp_path / "split.json"
    save_label_split(split, make_label_split(dataset.train.labels, per_class=8), dataset, per_class=8)
    metrics = run_finetune(checkpoint="random", backbone="tiny", image_size=SIZE, data="synthetic:colours",
                           label_split=str(split), epochs=5, min_steps=0, batch_size=8, precision="fp32",
                           progress=False, out=tmp_path / "ft", strategy="full")
    assert metrics["kind"] == "finetune" and metrics["num_train"] == 24 and metrics["steps"] == 15
    assert metrics["train_loss"] < math.log(3)  # a zero-initialised head starts at exactly ln(3)
    assert metrics["backbone_lr"] == pytest.approx(0.01) and metrics["label_split"] == str(split)
    model, card, top1 = reload_classifier(tmp_path / "ft" / "classifier.pt", dataset)
    assert card.num_classes == 3 and list(card.classes) == dataset.classes and card.evaluation["kind"] == "finetune"
    assert card.parent.checkpoint == "random" and card.label_split == str(split)
    assert card.image_size == SIZE and card.architecture == "tiny"
    assert top1 == pytest.approx(metrics["top1"], abs=1e-6)
    initial, _ = load_eval_backbone("random", "tiny", SIZE)  # the whole network moved, not just the head
    assert not torch.equal(model.stem[0].weight, initial.stem[0].weight)


def test_finetune_runs_under_bf16_autocast(colour_split):
    model = create_backbone("tiny")
    result = finetune(model, colour_split(16, 0), 3, image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3, epochs=1,
                      batch_size=8, precision="bf16", progress=False, min_steps=5)
    assert result["steps"] == 6 and result["epochs"] == 3  # 2 steps an epoch; epochs added to reach min_steps
    assert math.isfinite(result["train_loss"])
    assert model.head.weight.dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights


def test_probe_head_is_the_linear_probe_of_the_frozen_features(colour_split):
    """head_init="probe": the head (standardisation in eval mode, then the linear layer) gives the logits of an
    independently fitted, folded linear probe of the same frozen features."""
    from vipr.eval.linear import train_linear

    split, model = colour_split(24, 0), create_backbone("tiny")
    mean, std = [0.5] * 3, [0.25] * 3
    linear, norm = torch.nn.Linear(model.feature_dim, 3), torch.nn.BatchNorm1d(model.feature_dim, affine=False)
    _probe_head(model, split, 3, linear, norm, SIZE, mean, std, torch.device("cpu"), "fp32")
    assert model.training  # fine-tuning continues in train mode
    features = extract_features(model, split.images, image_size=SIZE, mean=mean, std=std, device="cpu",
                                precision="fp32", progress=False)
    expected = train_linear(features, torch.from_numpy(split.labels).long(), 3)(features)
    with torch.no_grad():
        got = linear(norm.eval()(features))
    assert torch.allclose(got, expected, atol=1e-3 * float(expected.abs().max()))
    assert (got.argmax(1) == torch.from_numpy(split.labels)).float().mean() > 0.9  # the probe already fits


def test_backbone_lr_scale_zero_keeps_the_backbone_weights(colour_split):
    model = create_backbone("tiny")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    finetune(model, colour_split(16, 0), 3, image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3, epochs=2, batch_size=8,
             progress=False, min_steps=0, backbone_lr_scale=0.0)
    for name, p in model.named_parameters():
        if not name.startswith("head"):
            assert torch.equal(p, before[name]), name
    assert model.head.weight.abs().sum() > 0  # the head did train


def _norm_statistics(model) -> dict:
    return {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("backbone_norm", ["adapt", "frozen"])
def test_backbone_norm_frozen_keeps_the_running_statistics_and_trains_the_rest(colour_split, backbone_norm):
    """frozen: every backbone BatchNorm keeps its running statistics (its affine weights and the convolutions
    still train); adapt, the recipe: they move. The head's own standardisation follows the batch in both."""
    model = create_backbone("tiny")
    before = _norm_statistics(model)
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if not name.startswith("head")}
    finetune(model, colour_split(16, 0), 3, image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3, epochs=2, batch_size=8,
             progress=False, min_steps=0, backbone_norm=backbone_norm)
    after = _norm_statistics(model)
    kept = [torch.equal(after[n][0], before[n][0]) and torch.equal(after[n][1], before[n][1]) for n in before]
    assert all(kept) if backbone_norm == "frozen" else not any(kept)
    assert all(not torch.equal(p, weights[name]) for name, p in model.named_parameters() if name in weights)


def test_finetune_recipe_options_are_checked(colour_split):
    for bad, message in (({"head_init": "ones"}, "head_init must be one of zeros, probe"),
                         ({"backbone_lr_scale": -0.1}, "backbone_lr_scale must be a number >= 0"),
                         ({"backbone_norm": "off"}, "backbone_norm must be one of adapt, frozen")):
        with pytest.raises(ConfigError, match=message):
            finetune(create_backbone("tiny"), colour_split(8, 0), 3, image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3,
                     progress=False, **bad)


def test_finetune_settings_are_checked(dataset):
    for bad, message in (({"epochs": 0}, "--epochs must be an integer >= 1"), ({"lr": -1.0}, "--lr must be"),
                         ({"batch_size": 0}, "--batch-size must be")):
        with pytest.raises(ConfigError, match=message):
            run_finetune(checkpoint="random", backbone="tiny", image_size=SIZE, data="x", progress=False, **bad)


def test_finetune_cli_json_last_line_with_all_train_labels(dataset, capsys, tmp_path):
    assert main(["eval", "finetune", "--checkpoint", "random", "--backbone", "tiny", "--image-size", str(SIZE),
                 "--data", "synthetic:colours", "--epochs", "5", "--min-steps", "0", "--batch-size", "8", "--out", str(tmp_path / "ft"),
                 "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("finetune: top-1")
    last = json.loads(out[-1])
    assert last["num_train"] == 60 and last["label_split"] is None and last["top1"] > 60
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["top1"] == last["top1"]
    assert last["classifier"] == str(tmp_path / "ft" / "classifier.pt")


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch; the last step of an epoch (3 steps an epoch)
def test_finetune_resume_after_a_stop_is_exact(dataset, tmp_path, sigint_after, stop_after):
    """Stopped by Ctrl-C after N steps and resumed, a fine-tune saves the classifier of an uninterrupted run."""
    run = dict(checkpoint="random", backbone="tiny", image_size=SIZE, data="synthetic:colours", epochs=3,
               min_steps=0, batch_size=16, precision="fp32", progress=False, strategy="full")  # 3 steps an epoch
    straight = run_finetune(**run, out=tmp_path / "straight")
    assert not (tmp_path / "straight" / "train").exists()  # no resume state is left behind
    sigint_after(stop_after)
    with pytest.raises(Interrupted, match="signal 2"):
        run_finetune(**run, out=tmp_path / "cut")
    sigint_after(None)
    state = torch.load(tmp_path / "cut" / "train" / "checkpoint.pt", weights_only=True)
    assert state["state"]["step"] == stop_after and state["format"] == "vipr-finetune/1"
    with pytest.raises(CheckpointError, match="another configuration"):
        run_finetune(**{**run, "lr": 0.2}, out=tmp_path / "cut", resume=True)
    resumed = run_finetune(**run, out=tmp_path / "cut", resume=True)
    assert not (tmp_path / "cut" / "train").exists()
    for key in ("top1", "top5", "train_loss", "steps", "epochs"):
        assert resumed[key] == straight[key], key
    a, b = (torch.load(tmp_path / name / "classifier.pt", weights_only=True)["backbone"] for name in ("straight", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_resume_without_a_state_is_one_line(dataset, tmp_path):
    with pytest.raises(ViprError, match="no fine-tune state") as err:
        run_finetune(checkpoint="random", backbone="tiny", image_size=SIZE, data="synthetic:colours", epochs=1,
                     min_steps=0, batch_size=16, progress=False, out=tmp_path, resume=True)
    assert "\n" not in str(err.value)


def test_finetune_cli_resume_reaches_the_run_and_needs_out(dataset, tmp_path, capsys):
    base = ["eval", "finetune", "--checkpoint", "random", "--backbone", "tiny", "--image-size", str(SIZE),
            "--data", "synthetic:colours", "--epochs", "1", "--min-steps", "0", "--batch-size", "16", "--no-progress",
            "--no-track", "--resume"]
    assert main(base) == 1
    assert "--resume needs --out" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "ft")]) == 1  # nothing was stopped there
    assert "no fine-tune state" in capsys.readouterr().err
