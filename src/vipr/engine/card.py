"""The model card: one typed record of what a model is, travelling with its weights (DESIGN.md, "Contracts").

Evaluation, export, serving and the registry read these fields, never string keys of an
untyped dict. A checkpoint stores ``card.to_dict()`` (plain data, so ``weights_only``
loading reads it); ``ModelCard.from_dict`` checks every field when a file is read, so a
bad card fails at the load that names the file, not deep inside an evaluation. Cards are
built by ``make_card`` only.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import vipr
from vipr.data.store import STORE_FORMAT
from vipr.errors import CheckpointError

CARD_FORMAT = "vipr-card/1"
# backbone: pooled features out; classifier: logits over `classes`; detect / instance / segment: a
# vipr.transfer model (boxes; boxes and masks; a label map) over `classes`, classes[0] "background"
TASKS = ("backbone", "classifier", "detect", "instance", "segment")
DENSE_TASKS = TASKS[2:]
RANDOM = "random"  # the checkpoint name of a random-init backbone (baselines), and their classifiers' parent


@dataclass(frozen=True)
class Parent:
    """The checkpoint a model was derived from (a classifier's pre-trained backbone)."""

    checkpoint: str  # absolute path when derived, or "random"
    sha256: str | None = None  # of that file's bytes when derived: finds the parent after moves


@dataclass(frozen=True)
class ModelCard:
    architecture: str  # a vipr.models name: create_backbone(architecture, **architecture_kwargs)
    architecture_kwargs: dict
    task: str  # one of TASKS
    num_classes: int  # 0 for a backbone
    image_size: int  # px, side of the square input
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    classes: tuple[str, ...]  # class names of the data it was trained or fitted on
    method: str  # how the weights were trained: moco_v2, supervised, random, ...
    dataset: str | None  # the SRC it was trained (a classifier: fitted) on
    dataset_digest: str | None  # content digest of that data (vipr.data.store)
    data_version: str | None  # the store format the digest was computed in
    config_hash: str | None  # digest of the producing run's config (resume refuses another)
    config: dict  # that config, resolved, as plain data
    parent: Parent | None  # None: trained from scratch
    label_split: str | None  # the labelled subset a classifier was fitted on
    evaluation: dict  # scores where it was made: {kind, top1, top5} of vipr eval, NAS test accuracy
    extra: dict  # job provenance: genotype, params, flops, the parent's dataset
    vipr_version: str  # of the vipr that wrote it
    format: str  # CARD_FORMAT: the card's own schema version

    def to_dict(self) -> dict:
        """Plain data (lists, dicts, str, numbers, None) for torch.save and JSON."""
        d = copy.deepcopy(asdict(self))
        for key in ("mean", "std", "classes"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "checkpoint") -> ModelCard:
        """A checked card; CheckpointError naming ``source`` and the missing or bad field otherwise."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source} has no model card (found {type(d).__name__}); re-create it with this vipr")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise CheckpointError(f"{source}: unknown model card field '{unknown[0]}'; it was written by a newer "
                                  f"vipr, upgrade to read it")
        missing = [name for name in names if name not in d]
        if missing:
            raise CheckpointError(f"{source}: model card lacks '{missing[0]}'; re-create the file with this vipr")
        card = cls(**{name: _check(name, d[name], source) for name in names})
        _check_consistent(card, source)
        return card


def make_card(*, architecture: str, architecture_kwargs: dict, image_size: int, mean: Sequence[float],
              std: Sequence[float], method: str, num_classes: int = 0, classes: Sequence[str] = (),
              dataset: str | None = None, dataset_digest: str | None = None, config: dict | None = None,
              config_hash: str | None = None, parent: Parent | None = None, label_split: str | None = None,
              evaluation: dict | None = None, extra: dict | None = None, task: str | None = None) -> ModelCard:
    """The one way a card is built, checked as every read card is (a CheckpointError names a bad field).

    ``dataset`` and ``dataset_digest``: a ``vipr.data.types.Dataset``'s ``name`` and ``digest``
    (None for a random-init baseline); the digest is of the decoded store, ``STORE_FORMAT``.
    ``task``: one of TASKS; None picks backbone or classifier by ``num_classes``.
    """
    d = {"architecture": architecture, "architecture_kwargs": dict(architecture_kwargs),
         "task": task or ("classifier" if num_classes else "backbone"), "num_classes": int(num_classes),
         "image_size": int(image_size), "mean": list(mean), "std": list(std), "classes": list(classes),
         "method": method, "dataset": dataset, "dataset_digest": dataset_digest,
         "data_version": STORE_FORMAT if dataset_digest else None, "config_hash": config_hash,
         "config": dict(config or {}), "parent": None if parent is None else asdict(parent),
         "label_split": label_split, "evaluation": dict(evaluation or {}), "extra": dict(extra or {}),
         "vipr_version": vipr.__version__, "format": CARD_FORMAT}
    return ModelCard.from_dict(d, source="the new model card")  # the same checks as every read


def _check(name: str, value: Any, source: str) -> Any:
    """``value`` converted to the field's type, or a CheckpointError naming the field."""
    kind = _KINDS[name]
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: model card field '{name}' is invalid ({err}); re-create the file "
                              f"with this vipr") from None


def _check_consistent(card: ModelCard, source: str) -> None:
    if card.task not in TASKS:
        raise CheckpointError(f"{source}: model card task '{card.task}' is not one of {', '.join(TASKS)}")
    if (card.task == "backbone") == (card.num_classes > 0):
        raise CheckpointError(f"{source}: model card task '{card.task}' contradicts num_classes {card.num_classes}")
    if card.format != CARD_FORMAT:
        raise CheckpointError(f"{source}: model card format '{card.format}', this vipr reads {CARD_FORMAT}")


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise TypeError(f"expected a non-empty string, got {v!r}")
    return v


def _optional_text(v: Any) -> str | None:
    return None if v is None else _text(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"expected an integer >= 0, got {v!r}")
    return v


def _size(v: Any) -> int:
    if _count(v) == 0:
        raise ValueError("expected a positive side in px, got 0")
    return v


def _channels(v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise TypeError(f"expected 3 per-channel numbers, got {v!r}")
    out = tuple(float(x) for x in v if not isinstance(x, bool) and isinstance(x, (int, float)))
    if len(out) != 3 or not all(math.isfinite(x) for x in out):
        raise TypeError(f"expected 3 finite numbers, got {v!r}")
    return out


def _std(v: Any) -> tuple[float, ...]:
    out = _channels(v)
    if min(out) <= 0:
        raise ValueError(f"std must be positive, got {list(out)}")
    return out


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise TypeError(f"expected a list of class names, got {type(v).__name__}")
    return tuple(v)


def _mapping(v: Any) -> dict:
    if not isinstance(v, dict):
        raise TypeError(f"expected a dict, got {type(v).__name__}")
    return v


def _parent(v: Any) -> Parent | None:
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) - {"checkpoint", "sha256"}:
        raise TypeError(f"expected {{checkpoint, sha256}}, got {v!r}")
    return Parent(_text(v.get("checkpoint")), _optional_text(v.get("sha256")))


_KINDS = {"architecture": _text, "architecture_kwargs": _mapping, "task": _text, "num_classes": _count,
          "image_size": _size, "mean": _channels, "std": _std, "classes": _names, "method": _text,
          "dataset": _optional_text, "dataset_digest": _optional_text, "data_version": _optional_text,
          "config_hash": _optional_text, "config": _mapping, "parent": _parent, "label_split": _optional_text,
          "evaluation": _mapping, "extra": _mapping, "vipr_version": _text, "format": _text}
