"""Semantic segmentation over one stage of a vipr backbone: an FCN head or DeepLab v3's ASPP head.

The model is torchvision's ``_SimpleSegmentationModel``: ``forward(x)`` with x (B, 3, H, W)
normalised images returns ``{"out": (B, num_classes, H, W)}`` logits, bilinearly upsampled from
the stage map to the input size. The heads are torchvision's ``FCNHead`` and ``DeepLabHead``
layer for layer, with their width as a parameter (torchvision fixes it: in/4 and 256).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn
from torchvision.models.segmentation._utils import _SimpleSegmentationModel
from torchvision.models.segmentation.deeplabv3 import ASPP

from vipr.config import suggest
from vipr.errors import ConfigError
from vipr.transfer.adapter import FeatureAdapter
from vipr.transfer.norm import DEFAULT_NORM, apply_norm, freeze_stages

HEADS = ("fcn", "aspp")
# DeepLab v3 (arXiv 1706.05587, sec. 3.3) uses rates 6, 12, 18 on 33 x 33 maps (output stride 16
# on 513 px crops); torchvision's 12, 24, 36 are those doubled for output stride 8.
DEEPLAB_RATES, DEEPLAB_MAP_SIDE = (6, 12, 18), 33


def scale_atrous_rates(map_side: int) -> tuple[int, ...]:
    """DeepLab v3's rates scaled to a ``map_side`` x ``map_side`` map, at least 1 and increasing.

    On small maps the paper's rates are useless: as the rate nears the map side, only the centre
    tap of the 3 x 3 filter falls inside the map and it degenerates to a 1 x 1 conv (the paper's
    Fig. 4). An 8 x 8 map (64 px at stride 8) gets (1, 3, 4).
    """
    rates: list[int] = []
    for rate in DEEPLAB_RATES:
        rates.append(max(round(rate * map_side / DEEPLAB_MAP_SIDE), 1, rates[-1] + 1 if rates else 1))
    return tuple(rates)


def fcn_head(in_channels: int, num_classes: int, channels: int) -> nn.Sequential:
    """torchvision's FCNHead with ``channels`` inside: conv3x3-BN-ReLU-Dropout(0.1)-conv1x1."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(), nn.Dropout(0.1), nn.Conv2d(channels, num_classes, 1))


def aspp_head(in_channels: int, num_classes: int, channels: int, rates: Sequence[int]) -> nn.Sequential:
    """torchvision's DeepLabHead with ``channels`` wide ASPP: ASPP-conv3x3-BN-ReLU-conv1x1.

    ASPP's image-pooling branch applies BN to a 1 x 1 map, so training needs at least 2 images per
    process (torch: "Expected more than 1 value per channel when training").
    """
    return nn.Sequential(ASPP(in_channels, list(rates), channels),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(), nn.Conv2d(channels, num_classes, 1))


def build_segmenter(backbone: nn.Module, num_classes: int, *, head: str = "fcn", image_size: int = 64,
                    norm: str = DEFAULT_NORM, trainable_stages: int | None = None, stage: int = -1,
                    channels: int | None = None, atrous_rates: Sequence[int] | None = None) -> nn.Module:
    """A segmenter reading stage ``stage`` of ``backbone`` (set in place).

    Args:
        num_classes: classes including the background (index 0).
        head: "fcn" or "aspp".
        image_size: side in px of the training images; sets the ASPP rates.
        norm, trainable_stages: see ``vipr.transfer.norm``.
        stage: the stage index whose map the head reads (negative counts from the end).
        channels: head width; None: torchvision's in/4 for FCN, min(256, in) for ASPP (torchvision's
            256 is meant for a 2048-channel ResNet-50 map).
        atrous_rates: ASPP rates; None: ``scale_atrous_rates`` of the stage map's side.
    """
    if head not in HEADS:
        raise ConfigError(f"unknown segmentation head '{head}'{suggest(head, HEADS)}")
    backbone = apply_norm(freeze_stages(backbone, trainable_stages), norm)
    adapter = FeatureAdapter(backbone, indices=(stage,), names=("out",), probe_size=image_size)
    c_in = adapter.in_channels_list[0]
    if head == "fcn":
        classifier = fcn_head(c_in, num_classes, channels or max(c_in // 4, 1))
    else:
        rates = atrous_rates or scale_atrous_rates(max(image_size // adapter.strides[0], 1))
        classifier = aspp_head(c_in, num_classes, channels or min(256, c_in), rates)
    return _SimpleSegmentationModel(adapter, classifier)
