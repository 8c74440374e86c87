"""`vipr eval` end to end on a small synthetic dataset with the tiny backbone."""

import json

import numpy as np
import pytest
import torch

from vipr.data.augment import eval_transform
from vipr.data.splits import make_label_split, save_label_split
from vipr.data.types import Dataset
from vipr.engine.card import make_card
from vipr.engine.checkpoint import FORMAT, save_atomic
from vipr.errors import ConfigError, DataError
from vipr.eval import runner
from vipr.eval.features import extract_features, load_eval_backbone
from vipr.models import create_backbone

SIZE = 16  # pixels, the side of the conftest's colour images


def evaluate(kind, **kw):
    kw = {"checkpoint": "random", "backbone": "tiny", "image_size": SIZE, **kw}
    return runner.run_eval(kind, data="synthetic:colours", precision="fp32", progress=False, **kw)


def test_knn_random_baseline(dataset, tmp_path):
    metrics = evaluate("knn", k=10, out=tmp_path / "knn")
    assert metrics["kind"] == "knn" and metrics["k"] == 10
    assert (metrics["num_train"], metrics["num_test"]) == (60, 30)
    assert metrics["top1"] > 80 and metrics["top5"] == 100.0  # 3 classes: top-5 is every class
    assert json.loads((tmp_path / "knn" / "metrics.json").read_text())["top1"] == metrics["top1"]
    assert json.loads((tmp_path / "knn" / "eval_config.json").read_text())["checkpoint"] == "random"
    assert not (tmp_path / "knn" / "classifier.pt").exists()


def test_linear_classifier_round_trips_and_reproduces_top1(dataset, tmp_path, reload_classifier):
    split = tmp_path / "split.json"
    save_label_split(split, make_label_split(dataset.train.labels, per_class=8), dataset, per_class=8)
    metrics = evaluate("linear", label_split=str(split), out=tmp_path / "lin")
    assert metrics["num_train"] == 24 and metrics["label_split"] == str(split)
    model, card, top1 = reload_classifier(tmp_path / "lin" / "classifier.pt", dataset)
    assert card.num_classes == 3 and list(card.classes) == dataset.classes
    assert card.parent.checkpoint == "random" and card.label_split == str(split)
    assert card.image_size == SIZE and card.architecture == "tiny"
    assert top1 == pytest.approx(metrics["top1"], abs=1e-6)
    assert metrics["top1"] > 80


def test_pretrained_checkpoint_from_another_dataset_loads(dataset, tmp_path):
    torch.manual_seed(3)
    backbone = create_backbone("tiny", small_stem=True)
    card = make_card(architecture="tiny", architecture_kwargs={"small_stem": True}, image_size=SIZE, mean=[0.5] * 3,
                     std=[0.25] * 3, method="moco_v2", classes=["a"],
                     dataset_digest="another-dataset")  # transfer: a digest other than the eval data's is fine
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": backbone.state_dict(), "state": {}},
                tmp_path / "c.pt")
    metrics = runner.run_eval("knn", checkpoint=str(tmp_path / "c.pt"), data="x", k=5, precision="fp32",
                              progress=False)
    assert metrics["image_size"] == SIZE and metrics["backbone"] == "tiny" and 0 <= metrics["top1"] <= 100
    resized = runner.run_eval("knn", checkpoint=str(tmp_path / "c.pt"), data="x", image_size=24, k=5,
                              precision="fp32", progress=False)
    assert resized["image_size"] == 24
    with pytest.raises(ConfigError, match="holds a tiny"):
        load_eval_backbone(str(tmp_path / "c.pt"), "resnet18", None)


def test_extracted_features_use_checkpoint_preprocessing(dataset):
    model, card = load_eval_backbone("random", "tiny", SIZE)
    features = extract_features(model, dataset.test.images, image_size=SIZE, mean=card.mean, std=card.std,
                                batch_size=7, precision="fp32", indices=np.array([4, 2]))
    x = eval_transform(torch.from_numpy(dataset.test.images[[4, 2]]), SIZE, card.mean, card.std)
    with torch.no_grad():
        torch.testing.assert_close(features, model.forward_features(x), rtol=1e-4, atol=1e-5)


def test_random_baseline_is_reproducible():
    a, card = load_eval_backbone("random", "tiny", SIZE)
    b, _ = load_eval_backbone("random", "tiny", SIZE)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert card.architecture_kwargs == {"small_stem": True} and card.image_size == SIZE


def test_random_needs_backbone_and_image_size():
    with pytest.raises(ConfigError, match="--backbone"):
        load_eval_backbone("random", None, 32)
    with pytest.raises(ConfigError, match="--image-size"):
        load_eval_backbone("random", "tiny", None)


def test_dataset_without_test_split_is_refused(monkeypatch, colour_split):
    ds = Dataset("folder:/imgs", colour_split(12, 0), None, ["red", "green", "blue"], "abc")
    monkeypatch.setattr(runner, "open_dataset", lambda src, **kw: ds)
    with pytest.raises(DataError, match="train/test"):
        evaluate("knn")


def test_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="knn, linear"):
        runner.run_eval("svm", checkpoint="random", data="x")


@pytest.mark.parametrize("progress", [True, False])
def test_no_progress_reaches_the_decoding_of_the_data(dataset, monkeypatch, progress):
    seen = []
    real_open = runner.open_dataset

    def spy(src, **kw):
        seen.append(kw.get("progress", True))
        return real_open(src, **kw)

    monkeypatch.setattr(runner, "open_dataset", spy)
    runner.run_eval("knn", checkpoint="random", backbone="tiny", image_size=SIZE, data="synthetic:colours",
                    precision="fp32", progress=progress, k=10)
    assert seen == [progress]
