"""The frozen teacher of a distillation method: found from SRC, checked against the run, kept out of its state.

SRC (``method.teacher``, ``vipr distill --teacher``) is a run folder or checkpoint
(:func:`vipr.models.loading.load_backbone`: the card's architecture with its weights, and its
class head when the card is a classifier) or a registered model ``NAME``, ``NAME/VERSION`` or
``NAME@ALIAS`` (:func:`vipr.platform.registry.resolve_model`).

The teacher is in eval mode (BatchNorm running statistics) with ``requires_grad_(False)``,
and is no submodule of the method: it is not in the student's state dict, checkpoint or
optimizer, DDP does not wrap it, and ``method.train()`` does not switch it back. A method
holding one mixes in :class:`TeacherHolder`, which moves it with the method (``.to(device)``,
channels-last). It runs inside the engine's autocast (the step, and bank passes through
:func:`vipr.ssl.neighbours.refresh_if_due`), so in bf16 where ``train.precision`` resolves to
bf16; its outputs come back as float32. A resumed run loads it again from SRC; the run checks
that the file is the one its checkpoint names (:mod:`vipr.distill.run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.engine import checkpoint as ckpt
from vipr.engine.card import DENSE_TASKS, ModelCard
from vipr.errors import ConfigError
from vipr.models.loading import load_backbone

FLAG = "--teacher (method.teacher)"


def resolve_teacher(source: str) -> Path:
    """The checkpoint file of ``source`` (see the module docstring); a ConfigError naming the fix otherwise."""
    if not source:
        raise ConfigError(f"no teacher given; pass {FLAG}: a run folder, a checkpoint .pt or a registered NAME@ALIAS")
    from vipr.platform.registry import resolve_source  # MLflow, only for a registered name

    return ckpt.resolve_path(resolve_source(source, FLAG))


def teacher_card(source: str) -> ModelCard:
    """The card of ``source``'s checkpoint, read without building the network (the CLI's early checks)."""
    return ckpt.load_card(resolve_teacher(source))


def check_teacher(card: ModelCard, source: str, image_size: int) -> None:
    """The teacher must be a backbone or classifier that sees what the student sees: crop side, normalisation."""
    if card.task in DENSE_TASKS:
        raise ConfigError(f"teacher {source} is a {card.task} model (vipr transfer); pass the backbone it started "
                          "from, or another backbone or classifier run")
    if card.image_size != image_size:
        raise ConfigError(f"teacher {source} takes {card.image_size} px images (its card) but data.image_size is "
                          f"{image_size}; pass --image-size {card.image_size}, or a teacher trained at {image_size} px")
    if tuple(card.mean) != tuple(IMAGENET_MEAN) or tuple(card.std) != tuple(IMAGENET_STD):
        raise ConfigError(f"teacher {source} normalises with mean {list(card.mean)} / std {list(card.std)}, but "
                          "distillation views use ImageNet's; pass a teacher trained by vipr")


def require_classifier(card: ModelCard, source: str, why: str) -> None:
    """ConfigError unless ``card`` is a classifier (logits to distil)."""
    if card.task != "classifier":
        raise ConfigError(f"{why} needs a classifier teacher, but {source} is a {card.task} ({card.method}, no class "
                          f"head); fit one with `vipr eval linear --checkpoint {source} --out DIR` and pass "
                          "--teacher DIR, or use --method seed, bingo or feature")


@dataclass(eq=False)
class Teacher:
    """A frozen network and its card; every call is under ``no_grad`` and returns float32."""

    module: nn.Module  # eval mode, no parameter requires grad
    card: ModelCard
    path: Path  # the checkpoint file read
    source: str  # SRC as given (method.teacher)

    @property
    def feature_dim(self) -> int:
        return int(self.module.feature_dim)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) pooled features."""
        return self.module.forward_features(x).float()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) class logits of a classifier teacher."""
        return self.module(x).float()

    @torch.no_grad()
    def stages_and_logits(self, x: torch.Tensor, stages: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(maps of ``stages`` (N, C, H, W) each, logits (N, classes) or pooled features) from one pass.

        The last stage pooled is ``forward_features`` (the backbone contract, as HSA's levels use it)."""
        maps = self.module.forward_intermediates(x, [*stages, -1])
        pooled = torch.flatten(F.adaptive_avg_pool2d(maps[-1], 1), 1)
        return [m.float() for m in maps[:-1]], self.module.head(pooled).float()

    def describe(self) -> dict:
        """What the student's card records of its teacher (``card.extra["teacher"]``)."""
        c = self.card
        return {"source": self.source, "checkpoint": str(self.path.resolve()), "architecture": c.architecture,
                "method": c.method, "task": c.task, "num_classes": c.num_classes, "feature_dim": self.feature_dim,
                "image_size": c.image_size, "dataset": c.dataset}


def load_teacher(source: str) -> Teacher:
    """The frozen teacher of ``source``: eval mode, ``requires_grad_(False)``."""
    path = resolve_teacher(source)
    module, card = load_backbone(path)
    module.eval().requires_grad_(False)
    return Teacher(module, card, path, source)


class TeacherHolder:
    """Mix in before the method's other bases: moves ``self.teacher`` with the method, checks it when bound.

    ``nn.Module.to`` / ``.cuda`` / ``.to(memory_format=...)`` all go through ``_apply``; the
    teacher is no submodule (see the module docstring), so it is moved here.
    """

    teacher: Teacher

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        teacher = self.__dict__.get("teacher")
        if teacher is not None:
            teacher.module._apply(fn, recurse)
        return result

    def bind(self, views, data) -> None:
        super().bind(views, data)
        if data is not None:
            check_teacher(self.teacher.card, self.teacher.source, data.image_size)
