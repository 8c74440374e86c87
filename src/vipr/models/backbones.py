"""Backbone registry and the backbone contract (DESIGN.md, "Contracts").

Every backbone is an ``nn.Module`` with

* ``feature_dim``: width of the pooled feature;
* ``forward_features(x) -> (N, feature_dim)``: pooled, pre-head features;
* ``forward_intermediates(x, indices) -> list[Tensor]``: the outputs of the stages named
  by ``indices`` (0-based, in stage order), as HSA's intermediate losses need;
* ``reset_head(num_classes)``: a fresh linear classifier (0 removes it);
* ``forward(x) -> logits`` (or features when there is no head).

``create_backbone(name, small_stem=..., **kw)`` builds one; ``list_backbones()`` names them.
Besides the registered names, ``timm:NAME`` is any timm model (vipr.models.timm_backbone).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchvision
from torch import nn

from vipr.config import suggest
from vipr.errors import ConfigError
from vipr.nas.network import build_darts_net

_REGISTRY: dict[str, Callable[..., "Backbone"]] = {}


def register_backbone(fn: Callable[..., "Backbone"]) -> Callable[..., "Backbone"]:
    _REGISTRY[fn.__name__] = fn
    return fn


TIMM_PATTERN = "timm:NAME"  # any timm model, e.g. timm:resnet18 (the timm extra)


def list_backbones() -> list[str]:
    """The registered names, then ``TIMM_PATTERN``."""
    return sorted(_REGISTRY) + [TIMM_PATTERN]


def create_backbone(name: str, **kwargs) -> "Backbone":
    if name.startswith("timm:"):
        from vipr.models.timm_backbone import create_timm_backbone  # timm is optional: import on use

        return create_timm_backbone(name, **kwargs)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone '{name}'{suggest(name, list_backbones())}")
    return _REGISTRY[name](**kwargs)


class Backbone(nn.Module):
    """A stem followed by stages, global average pooling and an optional linear head."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], feature_dim: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.feature_dim = feature_dim
        self.head: nn.Module = nn.Identity()
        self.num_classes = 0

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the stages in ``indices`` (negative indices count from the end)."""
        wanted = {i % len(self.stages) for i in indices}
        outputs, x = {}, self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in wanted:
                outputs[i] = x
            if i >= max(wanted):
                break
        return [outputs[i % len(self.stages)] for i in indices]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, feature_dim)

    def reset_head(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _resnet(arch: str, small_stem: bool, num_classes: int, stage_dims: Sequence[int]) -> Backbone:
    net = getattr(torchvision.models, arch)(weights=None)
    if small_stem:
        # CIFAR-style stem for images <= 64 px: 3x3 stride-1 conv and no max-pool keeps
        # the 32x32 input at 32x32 into layer1 instead of 8x8.
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    model = Backbone(stem, [net.layer1, net.layer2, net.layer3, net.layer4], stage_dims[-1])
    model.stage_dims = tuple(stage_dims)
    model.reset_head(num_classes)
    return model


@register_backbone
def resnet18(small_stem: bool = False, num_classes: int = 0) -> Backbone:
    return _resnet("resnet18", small_stem, num_classes, (64, 128, 256, 512))


@register_backbone
def resnet34(small_stem: bool = False, num_classes: int = 0) -> Backbone:
    return _resnet("resnet34", small_stem, num_classes, (64, 128, 256, 512))


@register_backbone
def resnet50(small_stem: bool = False, num_classes: int = 0) -> Backbone:
    return _resnet("resnet50", small_stem, num_classes, (256, 512, 1024, 2048))


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_backbone
def tiny(small_stem: bool = True, num_classes: int = 0, width: int = 16) -> Backbone:
    """A 4-stage conv net of a few thousand parameters, for tests and smoke runs."""
    dims = (width, width * 2, width * 4, width * 4)
    stem = _conv_bn(3, width, 1 if small_stem else 2)
    stages = [_conv_bn(width, dims[0], 1)] + [_conv_bn(dims[i - 1], dims[i], 2) for i in range(1, 4)]
    model = Backbone(stem, stages, dims[-1])
    model.stage_dims = dims
    model.reset_head(num_classes)
    return model


@register_backbone
def darts_net(genotype: dict | None = None, channels: int = 16, layers: int = 8, small_stem: bool = True,
              num_classes: int = 0, auxiliary: bool = False, drop_path_prob: float = 0.0) -> nn.Module:
    """The evaluation network of a NAS genotype (``Genotype.to_dict()``; None: DARTS_V2), vipr.nas.network."""
    return build_darts_net(genotype, channels=channels, layers=layers, small_stem=small_stem,
                           num_classes=num_classes, auxiliary=auxiliary, drop_path_prob=drop_path_prob)
