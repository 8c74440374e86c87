"""Feature distillation, FitNets-style (Romero et al., arXiv 1412.6550): regress the teacher's stage maps.

For each backbone stage in ``method.stages`` (0-based, negative from the end, in each
network's own stage order; default the last), a 1x1 convolution maps the student's map to
the teacher's channels, bilinear resizing matches the teacher's side when the two differ,
and :func:`vipr.distill.losses.hint_loss` (squared error of L2-normalised maps) compares
them; the stage terms are summed. ``method.kd_weight`` > 0 adds ``kd_weight`` times the KD
term of :mod:`vipr.distill.kd` (same ``temperature``, ``alpha``, ``label_split``) through a
linear head, and needs a classifier teacher. One view per image, seen by both networks.

Differences from FitNets / RepDistiller: the adapter is a plain 1x1 conv (RepDistiller's
ConvReg adds BatchNorm and ReLU, with stride-2 or transposed convs instead of resizing),
training is one stage (no hint-only pre-stage), and the maps are normalised, so the hint
needs no weight of 100. Teacher outputs come from one pass (its maps and its pooled last
stage through its head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import STAGE, Range
from vipr.distill.kd import KDConfig
from vipr.distill.losses import hint_loss, kd_loss
from vipr.distill.student import student_network
from vipr.distill.teacher import TeacherHolder, load_teacher, require_classifier
from vipr.errors import ConfigError
from vipr.ssl.method import PretrainMethod
from vipr.ssl.registry import register_method


@dataclass(frozen=True)
class FeatureConfig(KDConfig):
    name: str = "feature"
    stages: Annotated[tuple[int, ...], STAGE] = (-1,)  # stages whose maps are regressed
    kd_weight: Annotated[float, Range(0, 100)] = 0.0  # > 0: add the KD term (a classifier teacher)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("method.stages is empty; name at least one stage, e.g. method.stages=[-1]")

    def classifier_needed(self) -> str:
        return f"method.kd_weight {self.kd_weight}" if self.kd_weight > 0 else ""


def _stage_dims(network: nn.Module, stages: tuple[int, ...], role: str) -> list[int]:
    dims = getattr(network, "stage_dims", None)
    if dims is None:
        raise ConfigError(f"the {role} ({type(network).__name__}) has no stage_dims; method feature needs a "
                          "backbone with stages (resnet*, tiny, darts_net)")
    if any(not -len(dims) <= s < len(dims) for s in stages):
        raise ConfigError(f"method.stages {list(stages)} out of range for the {role}, which has {len(dims)} stages")
    return [dims[s] for s in stages]


class HintEncoder(nn.Module):
    """The student backbone, a 1x1-conv adapter per chosen stage and an optional linear head."""

    def __init__(self, backbone: nn.Module, stages: tuple[int, ...], teacher_dims: list[int], num_classes: int):
        super().__init__()
        self.backbone, self.stages = backbone, stages
        self.adapters = nn.ModuleList(nn.Conv2d(c_in, c_out, 1)
                                      for c_in, c_out in zip(_stage_dims(backbone, stages, "student"), teacher_dims))
        self.head = nn.Linear(backbone.feature_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(adapted maps (N, C_teacher, H, W) per stage, logits (N, classes) or None) from one pass."""
        maps = self.backbone.forward_intermediates(x, [*self.stages, -1])
        hints = [adapter(m) for adapter, m in zip(self.adapters, maps[:-1])]
        if self.head is None:
            return hints, None
        return hints, self.head(torch.flatten(F.adaptive_avg_pool2d(maps[-1], 1), 1))


@register_method("feature", FeatureConfig)
class FeatureDistill(TeacherHolder, PretrainMethod, nn.Module):
    default_recipe = "moco_v2"  # one view of it

    def __init__(self, backbone: nn.Module, config: FeatureConfig):
        super().__init__()
        self.config, self.teacher = config, load_teacher(config.teacher)
        if config.classifier_needed():
            require_classifier(self.teacher.card, config.teacher, config.classifier_needed())
        backbone, self.student_kwargs = student_network(backbone, config)
        teacher_dims = _stage_dims(self.teacher.module, config.stages, f"teacher {config.teacher}")
        classes = self.teacher.card.num_classes if config.kd_weight > 0 else 0
        self.online = HintEncoder(backbone, tuple(config.stages), teacher_dims, classes)

    def expand_views(self, specs: list) -> list:
        return specs[:1]

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        x = views[0]
        teacher_maps, teacher_logits = self.teacher.stages_and_logits(x, self.config.stages)
        hints, logits = self.online(x)
        hint = sum(hint_loss(_resized(h.float(), t.shape[-2:]), t) for h, t in zip(hints, teacher_maps))
        if logits is None:
            return {"loss": hint}
        kd = kd_loss(logits.float(), teacher_logits, batch.labels, self.config.temperature, self.config.alpha)
        return {"loss": hint + self.config.kd_weight * kd, "hint": hint.detach(), "kd": kd.detach()}


def _resized(student_map: torch.Tensor, side: torch.Size) -> torch.Tensor:
    """The student's map at the teacher's (H, W), bilinear, when they differ."""
    if student_map.shape[-2:] == side:
        return student_map
    return F.interpolate(student_map, size=tuple(side), mode="bilinear", align_corners=False)
