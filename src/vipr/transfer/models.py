"""The transfer models' registry: ``create_transfer_model(kind, backbone, num_classes, image_size)``.

Kinds: detectors (vipr.transfer.detection) and semantic segmenters (vipr.transfer.segmentation),
each over any vipr backbone, whose batch norms and frozen stages vipr.transfer.norm sets first.
``transfer_parameters`` splits a built model's trainable parameters into the backbone's and the
new heads', so the optimizer can give the pre-trained part its own learning rate.

Examples:
    >>> backbone = create_backbone("resnet18", small_stem=True)
    >>> model = create_transfer_model("faster_rcnn", backbone, num_classes=3, image_size=64,
    ...                               mean=[0.5] * 3, std=[0.25] * 3)
    >>> groups = transfer_parameters(model)  # {"backbone": [...], "heads": [...]}
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from vipr.config import suggest
from vipr.errors import ConfigError
from vipr.transfer.adapter import FeatureAdapter
from vipr.transfer.config import TASK_KINDS  # the kinds per downstream task, the default first
from vipr.transfer.detection import DETECTORS, build_detector, derive_anchor_sizes
from vipr.transfer.norm import DEFAULT_NORM, apply_norm, freeze_stages
from vipr.transfer.segmentation import HEADS, build_segmenter

__all__ = ["DEFAULT_NORM", "TASK_KINDS", "FeatureAdapter", "apply_norm", "build_detector", "build_segmenter",
           "create_transfer_model", "derive_anchor_sizes", "freeze_stages", "list_transfer_models",
           "transfer_parameters"]


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{kind: partial(build_detector, kind=kind) for kind in DETECTORS},
    **{head: partial(build_segmenter, head=head) for head in HEADS},
}


def list_transfer_models() -> list[str]:
    """The kinds ``create_transfer_model`` builds: detectors, then segmenters."""
    return list(_BUILDERS)


def create_transfer_model(kind: str, backbone: nn.Module, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """The ``kind`` model over ``backbone``; ``kwargs`` go to build_detector or build_segmenter.

    ``num_classes`` counts the background (index 0); ``image_size`` is the S x S training side in px.
    Detectors also need ``mean`` and ``std`` (the model card's, for 0..1 images).
    """
    if kind not in _BUILDERS:
        hint = suggest(kind, _BUILDERS)
        choices = "" if hint.startswith("; valid") else f"; valid: {', '.join(_BUILDERS)}"
        raise ConfigError(f"unknown transfer model '{kind}'{hint}{choices}")
    builder = _BUILDERS[kind]
    if kind in DETECTORS:
        return builder(backbone, num_classes=num_classes, image_size=image_size, **kwargs)
    return builder(backbone, num_classes, image_size=image_size, **kwargs)


def transfer_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters: ``backbone`` (under a FeatureAdapter) and ``heads`` (the rest: FPN, RPN,
    box, mask and segmentation heads), each in the model's parameter order."""
    in_backbone = {id(p) for m in model.modules() if isinstance(m, FeatureAdapter) for p in m.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "heads": []}
    for param in model.parameters():
        if param.requires_grad:
            groups["backbone" if id(param) in in_backbone else "heads"].append(param)
    return groups
