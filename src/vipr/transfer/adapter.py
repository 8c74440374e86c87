"""A vipr backbone's stage maps as the ordered dict torchvision's FPN and heads read."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from vipr.errors import ConfigError
from vipr.transfer.norm import freeze_unused_stages

PROBE_SIZE = 128  # px: the dummy input that measures strides; 128 = 4 x the deepest usual stride (32)


class FeatureAdapter(nn.Module):
    """``forward(x) -> OrderedDict`` of the chosen stages' maps, keyed "0", "1", ... (or ``names``).

    The backbone's classifier head is removed (``reset_head(0)``) and the stages after the deepest
    chosen one are frozen (vipr.transfer.norm.freeze_unused_stages): transfer never runs them, and
    a trainable parameter without a gradient fails DDP. Each map's stride (input px per map px) is measured once
    here with a dummy forward in eval mode without gradients, so the BN statistics stay as they
    were; anchors, RoI pooling and the ASPP rates read ``strides``.

    Args:
        backbone: any module of the backbone contract (vipr.models.backbones).
        indices: 0-based stage indices, increasing (negative count from the end); None: the last
            three stages, or all of them when there are fewer.
        names: the keys of the returned maps; None: "0", "1", ...
        probe_size: side in px of the dummy input; a timm model with a fixed input size uses its own.

    Attributes:
        in_channels_list: channels of each returned map, from ``backbone.stage_dims``.
        strides: input px per map px of each returned map (e.g. 8, 16, 32 for a ResNet).

    Examples:
        >>> adapter = FeatureAdapter(create_backbone("resnet18"))
        >>> [tuple(m.shape) for m in adapter(torch.zeros(2, 3, 64, 64)).values()]
        [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    """

    def __init__(self, backbone: nn.Module, indices: Sequence[int] | None = None,
                 names: Sequence[str] | None = None, probe_size: int = PROBE_SIZE):
        super().__init__()
        backbone.reset_head(0)
        self.backbone = backbone
        self.indices = _stage_indices(len(backbone.stage_dims), indices)
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(len(self.indices)))
        if len(self.names) != len(self.indices):
            raise ConfigError(f"{len(self.names)} names {self.names} for {len(self.indices)} stages {self.indices}")
        self.in_channels_list = [backbone.stage_dims[i] for i in self.indices]
        freeze_unused_stages(backbone, self.indices[-1])
        self.strides = self._measure_strides(getattr(backbone, "input_size", None) or (probe_size, probe_size))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """x: (B, 3, H, W) normalised images -> {name: (B, C_i, H / stride_i, W / stride_i)}."""
        return OrderedDict(zip(self.names, self.backbone.forward_intermediates(x, self.indices)))

    @torch.no_grad()
    def _measure_strides(self, size: tuple[int, int]) -> list[int]:
        was_training = self.training
        self.eval()  # a train-mode probe would move the BN running statistics
        try:
            maps = self.forward(torch.zeros(1, 3, *size))
        finally:
            self.train(was_training)
        for name, m, channels in zip(self.names, maps.values(), self.in_channels_list):
            if m.shape[1] != channels:
                raise ConfigError(f"stage '{name}' gives {m.shape[1]} channels, but the backbone's stage_dims "
                                  f"say {channels}")
        return [max(1, round(size[0] / m.shape[-2])) for m in maps.values()]


def _stage_indices(stages: int, indices: Sequence[int] | None) -> tuple[int, ...]:
    """0-based, increasing stage indices; None: the last three (all when fewer)."""
    if indices is None:
        return tuple(range(max(0, stages - 3), stages))
    if any(not -stages <= i < stages for i in indices):
        raise ConfigError(f"stage indices {tuple(indices)} out of range for a backbone of {stages} stages")
    resolved = tuple(i % stages for i in indices)
    if not resolved or any(b <= a for a, b in zip(resolved, resolved[1:])):
        raise ConfigError(f"stage indices must be increasing and not empty, got {tuple(indices)}")
    return resolved
