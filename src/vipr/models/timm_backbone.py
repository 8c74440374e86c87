"""Any timm model as a vipr backbone: ``create_backbone("timm:NAME")`` (needs ``pip install 'vipr[timm]'``).

The stages are timm's ``feature_info`` entries (resnet18: the stem's activation, then
layer1..4; a ViT: each block), read through timm's ``forward_intermediates`` with the
final norm applied; the pooled feature is the global average of the last one, so HSA's
pooled last stage equals ``forward_features`` as for the built-in backbones. timm's own
pooling head (ConvNeXt's norm, MobileNetV3's 1x1 conv, a ViT's class token readout) is
pruned: every parameter left gets a gradient, as DDP needs.

Weights start random (``pretrained=False`` always: nothing is downloaded); ``weights=PATH``
loads a local timm state dict (.safetensors, or a torch file read with ``weights_only``) through
vipr.models.init_weights, as ``--init-weights`` does, and prints what matched.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import torch
from torch import nn

from vipr.errors import ConfigError

PREFIX = "timm:"
INSTALL_HINT = "pip install 'vipr[timm]' (or pip install timm)"


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm backbones need the timm package; {INSTALL_HINT}") from None
    return timm


class TimmBackbone(nn.Module):
    """A timm model behind the backbone contract (vipr.models.backbones)."""

    def __init__(self, name: str, model: nn.Module, num_classes: int = 0, input_size: tuple[int, int] | None = None):
        super().__init__()
        self.name = name
        self.model = model
        self.input_size = input_size  # (H, W) px the model only takes, or None: any size
        self.stage_dims = tuple(info["num_chs"] for info in model.feature_info)
        self.feature_dim = self.stage_dims[-1]
        self.reset_head(num_classes)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Stage maps (N, C, H, W) in the order of ``indices`` (negative indices count from the end)."""
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ConfigError(f"backbone '{self.name}' takes {self.input_size[0]}x{self.input_size[1]} px images, got "
                              f"{x.shape[-2]}x{x.shape[-1]}; use --image-size {self.input_size[0]} or build it with img_size=PX")
        wanted = sorted({i % len(self.stage_dims) for i in indices})
        maps = self.model.forward_intermediates(x, indices=wanted, norm=True, stop_early=True,
                                                intermediates_only=True)  # in stage order
        by_index = dict(zip(wanted, maps))
        return [by_index[i % len(self.stage_dims)] for i in indices]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        last = self.forward_intermediates(x, [-1])[0]  # (N, feature_dim, H, W)
        return last.mean(dim=(2, 3))  # (N, feature_dim)

    def reset_head(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def create_timm_backbone(name: str, small_stem: bool = False, num_classes: int = 0, weights: str | None = None,
                         **timm_kwargs) -> TimmBackbone:
    """``timm:NAME`` at random init, or with the local ``weights`` file; ``timm_kwargs`` go to timm.

    ``small_stem`` is accepted and ignored: pre-training and evaluation pass it for images
    <= 64 px, and a timm model keeps its own stem (at 32 px timm:resnet18's last stage is 1x1).
    A model with a fixed input size (a ViT) is built with ``dynamic_img_size`` where timm
    offers it, so it takes crops of any size its patches divide; one without (LeViT) takes
    its default size, or ``img_size``.
    """
    timm = _timm()
    arch = name.removeprefix(PREFIX)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
        hint = f" (did you mean '{PREFIX}{close[0]}'?)" if close else "; timm.list_models('*PATTERN*') lists them"
        raise ConfigError(f"unknown timm model '{arch}' in backbone '{name}'{hint}")
    model, input_size = _build(timm, arch, name, timm_kwargs)
    if not all(hasattr(model, a) for a in ("feature_info", "forward_intermediates", "prune_intermediate_layers")):
        raise ConfigError(f"timm model '{arch}' has no forward_intermediates in timm {timm.__version__}, "
                          f"so its stages cannot be read; pick another model")
    model.prune_intermediate_layers(len(model.feature_info), prune_norm=False, prune_head=True)
    backbone = TimmBackbone(f"{PREFIX}{arch}", model, num_classes, input_size)
    if weights is not None:
        from vipr.models.init_weights import initialise  # the one loader of weights files (--init-weights)

        initialise(backbone, weights, backbone.name, flag=f"backbone '{backbone.name}' weights")
    return backbone


def _build(timm, arch: str, name: str, kwargs: dict) -> tuple[nn.Module, tuple[int, int] | None]:
    """The headless random-init model and the (H, W) it only takes (None: any)."""
    cfg = timm.models.get_pretrained_cfg(arch)
    fixed = bool(cfg and cfg.fixed_input_size)
    if fixed and not {"img_size", "dynamic_img_size"} & kwargs.keys():
        try:
            return timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs), None
        except TypeError as err:
            if "dynamic_img_size" not in str(err):
                raise ConfigError(f"backbone '{name}': timm cannot build it with {kwargs}: {err}") from None
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    except TypeError as err:  # a keyword the model does not take
        raise ConfigError(f"backbone '{name}': timm cannot build it with {kwargs}: {err}") from None
    if not fixed or kwargs.get("dynamic_img_size"):
        return model, None
    size = kwargs.get("img_size", cfg.input_size[-2:])
    return model, (size, size) if isinstance(size, int) else tuple(size)
