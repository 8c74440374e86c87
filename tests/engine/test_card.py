"""The model card: built once, plain data on disk, checked field by field when read."""

import json

import pytest

from vipr.engine.card import CARD_FORMAT, ModelCard, Parent, make_card
from vipr.errors import CheckpointError


def tiny_card(**overrides) -> ModelCard:
    settings = {"architecture": "tiny", "architecture_kwargs": {"small_stem": True}, "image_size": 16,
                "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "method": "moco_v2", "classes": ["a", "b"],
                "dataset": "builtin:shapes", "dataset_digest": "d1g35t", "config": {"train": {"epochs": 2}},
                "config_hash": "c0ffee"}
    return make_card(**{**settings, **overrides})


def test_round_trip_through_plain_data():
    card = tiny_card(num_classes=2, parent=Parent("/runs/a/checkpoint.pt", "ab" * 32), label_split="split.json",
                     evaluation={"kind": "linear", "top1": 50.0, "top5": 100.0})
    d = card.to_dict()
    assert json.loads(json.dumps(d)) == d  # lists, dicts, str, numbers and None only
    assert ModelCard.from_dict(d) == card
    assert card.task == "classifier" and card.parent.sha256 == "ab" * 32 and card.format == CARD_FORMAT
    assert card.data_version == "vipr-store/1"  # the digest's store format travels with it


def test_a_backbone_card_has_no_classes_to_score():
    card = tiny_card()
    assert card.task == "backbone" and card.num_classes == 0 and card.parent is None
    assert make_card(architecture="tiny", architecture_kwargs={}, image_size=8, mean=[0.5] * 3, std=[0.5] * 3,
                     method="random").data_version is None  # no data, no digest


@pytest.mark.parametrize("field, value, message", [
    ("image_size", 0, "'image_size' is invalid"),
    ("std", [0.2, 0.0, 0.2], "'std' is invalid"),
    ("mean", [0.5, 0.5], "'mean' is invalid"),
    ("num_classes", -1, "'num_classes' is invalid"),
    ("classes", "abc", "'classes' is invalid"),
    ("task", "detector", "task 'detector' is not one of"),
    ("task", "classifier", "contradicts num_classes 0"),
    ("parent", {"path": "x"}, "'parent' is invalid"),
    ("format", "vipr-card/9", "this vipr reads vipr-card/1"),
])
def test_a_bad_field_is_named_with_the_file(field, value, message):
    d = {**tiny_card().to_dict(), field: value}
    with pytest.raises(CheckpointError, match=message) as err:
        ModelCard.from_dict(d, source="runs/x/checkpoint.pt")
    assert str(err.value).startswith("runs/x/checkpoint.pt") and "\n" not in str(err.value)


def test_missing_and_unknown_fields_are_named():
    d = tiny_card().to_dict()
    with pytest.raises(CheckpointError, match="m.pt: model card lacks 'image_size'"):
        ModelCard.from_dict({k: v for k, v in d.items() if k != "image_size"}, source="m.pt")
    with pytest.raises(CheckpointError, match="unknown model card field 'colour'"):
        ModelCard.from_dict({**d, "colour": "red"}, source="m.pt")
    with pytest.raises(CheckpointError, match="m.pt has no model card"):
        ModelCard.from_dict(None, source="m.pt")


def test_make_card_checks_what_it_builds():
    with pytest.raises(CheckpointError, match="'image_size' is invalid"):
        tiny_card(image_size=-4)
