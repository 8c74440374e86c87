"""Faster R-CNN, Mask R-CNN and RetinaNet (torchvision) over an FPN on a vipr backbone's stages.

Sized for 64-256 px scenes on a CPU: a 64-channel FPN, slim heads, anchors derived from the
image size and the measured strides (``derive_anchor_sizes``), and RPN proposal counts a few
times below torchvision's 800-px defaults.

Inputs and outputs are torchvision's (GeneralizedRCNN / RetinaNet ``forward``): a list of
(3, H, W) float images in 0..1 (the model normalises them with ``mean``/``std``), and in training
one target dict per image: ``boxes`` float (N, 4) x1, y1, x2, y2 px with x2 > x1 and y2 > y1,
``labels`` int64 (N,) with 0 the background, and for Mask R-CNN ``masks`` uint8 (N, H, W). Training
returns the loss dict; eval returns per image ``boxes``, ``labels``, ``scores`` (and ``masks``
float (N, 1, H, W) probabilities).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from vipr.config import suggest
from vipr.errors import ConfigError
from vipr.transfer.adapter import FeatureAdapter
from vipr.transfer.norm import DEFAULT_NORM, apply_norm, freeze_stages

DETECTORS = ("faster_rcnn", "mask_rcnn", "retinanet")
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width, torchvision's
ANCHOR_STRIDE_MULTIPLE = 4  # anchor side / level stride; torchvision's 32..512 over strides 4..64 is 8
MIN_ANCHOR = 8  # px: a smaller box covers under 2 x 2 cells of a stride-4 map
# RPN boxes kept per image (pre-NMS: per FPN level). torchvision's 2000/1000 suit ~1000 x 800 px
# images; a 64-256 px scene holds a few dozen objects, the box head samples 128 RoIs of the
# post-NMS set in training, and the NMS over ~4,000 anchors (64 px, strides 2..16) dominated a CPU step.
RPN_TOP_N = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
             "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100}
OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # RetinaNet's three anchor scales per level (torchvision's)
BOX_BATCH_PER_IMAGE = 128  # RoIs sampled per image for the box head (torchvision: 512)


class FPNFeatures(nn.Module):
    """The adapter's maps through a FeaturePyramidNetwork: ``forward(x) -> OrderedDict`` of
    (B, out_channels, H_l, W_l) per level, the adapter's names then the extra block's ("pool",
    or "p6", "p7"). ``out_channels`` is what torchvision's detectors read; ``strides`` per level."""

    def __init__(self, adapter: FeatureAdapter, out_channels: int, extra_blocks: nn.Module):
        super().__init__()
        self.body = adapter
        self.fpn = FeaturePyramidNetwork(adapter.in_channels_list, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        extra = 1 if isinstance(extra_blocks, LastLevelMaxPool) else 2  # each halves the last map
        self.strides = list(adapter.strides) + [adapter.strides[-1] * 2 ** (k + 1) for k in range(extra)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(x))


def derive_anchor_sizes(image_size: int, strides: Sequence[int]) -> tuple[int, ...]:
    """One anchor side (px) per pyramid level, from the level strides and the image side.

    The rule: 4 x the level's stride (torchvision's 32..512 px anchors over strides 4..64 at
    800 px are 8 x; objects in 64-256 px scenes are a few to a few dozen px, so half that), then,
    if the largest exceeds ``image_size``, the ladder is shifted down until the largest equals the
    image, keeping the ratios between levels; a smallest size under 8 px (``MIN_ANCHOR``) is raised
    to 8 and the levels between are spread evenly in log scale up to the largest. Equal strides (a
    ViT) give equal sizes.

    Examples:
        >>> derive_anchor_sizes(64, [2, 4, 8, 16])  # resnet18 small_stem, last three stages + pool
        (8, 16, 32, 64)
        >>> derive_anchor_sizes(64, [8, 16, 32, 64])  # resnet18, downsampling stem
        (8, 16, 32, 64)
        >>> derive_anchor_sizes(256, [8, 16, 32, 64])
        (32, 64, 128, 256)
    """
    if image_size < 2 * MIN_ANCHOR:
        raise ConfigError(f"image_size must be at least {2 * MIN_ANCHOR} px for anchors of at least "
                          f"{MIN_ANCHOR} px, got {image_size}")
    raw = [ANCHOR_STRIDE_MULTIPLE * s for s in strides]
    top = min(raw[-1], image_size)
    bottom = max(MIN_ANCHOR, raw[0] * top / raw[-1])
    if raw[-1] == raw[0]:
        return tuple(round(top) for _ in raw)
    span = math.log(raw[-1] / raw[0])
    return tuple(round(bottom * (top / bottom) ** (math.log(r / raw[0]) / span)) for r in raw)


def build_detector(backbone: nn.Module, kind: str, num_classes: int, image_size: int, *, mean: Sequence[float],
                   std: Sequence[float], fpn_channels: int = 64, head_channels: int = 256,
                   anchor_sizes: Sequence[int | Sequence[int]] | None = None, norm: str = DEFAULT_NORM,
                   trainable_stages: int | None = None, score_thresh: float = 0.05,
                   detections_per_img: int = 100) -> nn.Module:
    """A torchvision ``kind`` detector over the last three stages of ``backbone`` (set in place).

    Args:
        kind: "faster_rcnn", "mask_rcnn" or "retinanet".
        num_classes: classes including the background (index 0).
        image_size: side in px of the S x S training and test images.
        mean, std: the per-channel normalisation the model applies to its 0..1 input images (the
            model card's); zeros and ones for images that arrive normalised (vipr.transfer.augment's).
        fpn_channels: FPN width, also the RPN, RetinaNet and mask head width (torchvision: 256).
        head_channels: box head MLP width (torchvision: 1024).
        anchor_sizes: px per FPN level (an int, or a tuple of sizes); None: ``derive_anchor_sizes``.
            RetinaNet multiplies an int by ``OCTAVES`` (torchvision's three scales per octave) and
            derives its sizes for image_size / 2^(2/3), so its largest anchor stays inside the image.
        norm, trainable_stages: see ``vipr.transfer.norm``.
        score_thresh, detections_per_img: eval-time filtering of the detections.

    Training skips the model's resize (``transform._skip_resize``): images come at their training
    scale from vipr's batch augmentation. Eval resizes to ``image_size`` (a no-op for S x S).
    """
    if kind not in DETECTORS:
        raise ConfigError(f"unknown detector '{kind}'{suggest(kind, DETECTORS)}")
    adapter = FeatureAdapter(apply_norm(freeze_stages(backbone, trainable_stages), norm), probe_size=image_size)
    extra = LastLevelP6P7(fpn_channels, fpn_channels) if kind == "retinanet" else LastLevelMaxPool()
    features = FPNFeatures(adapter, fpn_channels, extra)
    octaves = kind == "retinanet"  # its top octave is 2^(2/3) x the base: keep that inside the image
    derived = anchor_sizes or derive_anchor_sizes(round(image_size / OCTAVES[-1] if octaves else image_size),
                                                  features.strides)
    sizes = _anchor_tuples(derived, len(features.strides), OCTAVES if octaves else (1.0,))
    anchors = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    common = {"min_size": image_size, "max_size": image_size, "image_mean": [float(m) for m in mean],
              "image_std": [float(s) for s in std]}
    if kind == "retinanet":
        model = RetinaNet(features, num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                          detections_per_img=detections_per_img, **common)
    else:
        model = _rcnn(kind, features, num_classes, anchors, head_channels, score_thresh=score_thresh,
                      detections_per_img=detections_per_img, **common)
    model.transform._skip_resize = True  # read in training only; eval still resizes to image_size
    return model


def _rcnn(kind: str, features: FPNFeatures, num_classes: int, anchors: AnchorGenerator, head_channels: int,
          score_thresh: float, detections_per_img: int, **common) -> nn.Module:
    """Faster or Mask R-CNN with slim heads; RoIs pooled from the adapter's levels (not "pool")."""
    width, levels = features.out_channels, list(features.body.names)
    box = {"box_roi_pool": MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
           "box_head": TwoMLPHead(width * 7 * 7, head_channels),
           "box_predictor": FastRCNNPredictor(head_channels, num_classes),
           "box_batch_size_per_image": BOX_BATCH_PER_IMAGE, "box_score_thresh": score_thresh,
           "box_detections_per_img": detections_per_img}
    if kind == "faster_rcnn":
        return FasterRCNN(features, rpn_anchor_generator=anchors, **RPN_TOP_N, **box, **common)
    # torchvision's mask head is as wide as its FPN (4 x 256 over 256): keep that ratio
    mask = {"mask_roi_pool": MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
            "mask_head": MaskRCNNHeads(width, (width,) * 4, 1),
            "mask_predictor": MaskRCNNPredictor(width, width, num_classes)}
    return MaskRCNN(features, rpn_anchor_generator=anchors, **RPN_TOP_N, **box, **mask, **common)


def _anchor_tuples(sizes: Sequence[int | Sequence[int]], levels: int,
                   scales: Sequence[float]) -> tuple[tuple[int, ...], ...]:
    """One tuple of sizes per level: an int entry times each of ``scales``, a tuple as given."""
    if len(sizes) != levels:
        raise ConfigError(f"anchor_sizes needs one entry per FPN level ({levels}), got {len(sizes)}: {tuple(sizes)}")
    return tuple(tuple(int(s * k) for k in scales) if isinstance(s, (int, float)) else tuple(s) for s in sizes)
