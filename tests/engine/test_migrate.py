"""Format-1 checkpoints, written by the code of that format (fixtures/make_format1.py), load and evaluate."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vipr.data.augment import eval_transform
from vipr.data.sources import open_dataset
from vipr.engine import checkpoint as ckpt
from vipr.engine.migrate import FORMAT_V1, card_from_v1
from vipr.errors import CheckpointError
from vipr.eval import runner
from vipr.models.loading import load_backbone

FIXTURES = Path(__file__).parent / "fixtures"
BACKBONE, CLASSIFIER = FIXTURES / "format1_checkpoint.pt", FIXTURES / "format1_classifier.pt"
DATA = "builtin:shapes?train=100&test=50&size=16"  # kNN top-1 20.0, top-5 68.0 with the format-1 code (k=10)
FIT_DATA = "builtin:shapes?train=20&test=10&size=16"  # what the fixtures were trained and fitted on


def test_the_fixtures_are_format_1():
    for path in (BACKBONE, CLASSIFIER):
        raw = torch.load(path, map_location="cpu", weights_only=False)  # test-only: our own fixture files
        assert raw["format"] == FORMAT_V1 and "meta" in raw and "card" not in raw


def test_a_format_1_backbone_loads_with_its_card():
    saved = ckpt.load(BACKBONE)
    assert saved["format"] == ckpt.FORMAT and "state" in saved
    card = ckpt.read_card(saved, BACKBONE)
    assert (card.architecture, card.architecture_kwargs, card.task) == ("tiny", {"small_stem": True}, "backbone")
    assert card.image_size == 16 and card.mean == (0.485, 0.456, 0.406) and card.method == "moco_v2"
    assert card.dataset == FIT_DATA and card.dataset_digest and card.config_hash and card.config["train"]["epochs"] == 1
    assert len(card.classes) == 10 and card.parent is None and card.vipr_version == "0.1.0"


def test_a_format_1_classifier_keeps_its_lineage_and_scores():
    card = ckpt.load_card(CLASSIFIER)
    assert card.task == "classifier" and card.num_classes == 10 and card.evaluation["kind"] == "linear"
    assert card.parent.checkpoint.endswith("checkpoint.pt") and len(card.parent.sha256) == 64
    assert card.extra["parent_dataset"] == FIT_DATA  # keys without a card field are kept
    model, _ = load_backbone(CLASSIFIER)
    test = open_dataset(FIT_DATA).test
    with torch.no_grad():
        logits = model.eval()(eval_transform(torch.from_numpy(np.array(test.images)), card.image_size, card.mean, card.std))
    top1 = 100.0 * float((logits.argmax(1).numpy() == test.labels).mean())
    assert top1 == pytest.approx(card.evaluation["top1"])  # the score the format-1 code measured


@pytest.mark.parametrize("path", [BACKBONE, CLASSIFIER])
def test_format_1_checkpoints_evaluate_as_before(path, one_thread):
    metrics = runner.run_eval("knn", checkpoint=str(path), data=DATA, k=10, precision="fp32", progress=False)
    assert metrics["backbone"] == "tiny" and metrics["image_size"] == 16
    assert metrics["top1"] == pytest.approx(20.0, abs=2.0) and metrics["top5"] == pytest.approx(68.0, abs=2.0)


def test_a_format_1_rng_state_restores():
    rng = ckpt.load(BACKBONE)["state"]["rng"][0]
    kind, keys, pos, *_ = rng["numpy"]  # format 1: numpy's own tuple, an ndarray inside
    generator = torch.Generator()
    ckpt.set_rng_state(rng, generator)
    now = np.random.get_state()
    assert now[0] == kind and np.array_equal(now[1], keys) and now[2] == pos
    assert torch.equal(generator.get_state(), rng["augment"])


def test_format_1_without_preprocessing_is_refused():
    with pytest.raises(CheckpointError, match="m.pt has no image_size, mean, std in its metadata"):
        card_from_v1({"backbone": "tiny"}, "m.pt")
