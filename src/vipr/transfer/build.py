"""A transfer model from its spec, the spec from a run's config, and a trained one back from its checkpoint.

The spec (the card's ``architecture_kwargs``; the card's ``architecture`` is the kind) is plain
data: the backbone's name and kwargs and every head setting, so ``load_transfer_model`` rebuilds
the exact module whose state dict the checkpoint holds. Every model takes float images in [0, 1]
(a detector normalises in its transform, a segmenter through ``Normalized``).
"""

from __future__ import annotations

import os

from torch import nn

from vipr.engine import checkpoint as ckpt
from vipr.engine.card import DENSE_TASKS, ModelCard
from vipr.errors import CheckpointError
from vipr.models.backbones import create_backbone
from vipr.transfer.models import create_transfer_model, transfer_parameters
from vipr.transfer.task import Normalized

SEGMENTERS = ("fcn", "aspp")


def model_spec(config, init, num_classes: int, image_size: int) -> dict:
    """The plain-data spec of the model ``config`` (a TransferConfig) builds over ``init`` (an InitialBackbone)."""
    m = config.model
    spec = {"kind": config.kind, "backbone": init.architecture, "backbone_kwargs": dict(init.architecture_kwargs),
            "num_classes": num_classes, "image_size": image_size, "mean": list(init.mean), "std": list(init.std),
            "norm": m.norm, "trainable_stages": m.trainable_stages}
    if config.kind in SEGMENTERS:
        return {**spec, "channels": m.head_channels}
    return {**spec, "fpn_channels": m.fpn_channels, "head_channels": m.head_channels,
            "anchor_sizes": list(m.anchor_sizes) or None, "score_thresh": config.eval.score_thresh,
            "detections_per_img": config.eval.max_detections}


def build_transfer_model(spec: dict, backbone: nn.Module) -> nn.Module:
    """The detector, or the ``Normalized`` segmenter, of ``spec`` over ``backbone`` (changed in place)."""
    kind, common = spec["kind"], {k: spec[k] for k in ("norm", "trainable_stages")}
    if kind in SEGMENTERS:
        network = create_transfer_model(kind, backbone, spec["num_classes"], spec["image_size"],
                                        channels=spec["channels"], **common)
        return Normalized(network, spec["mean"], spec["std"])
    return create_transfer_model(kind, backbone, spec["num_classes"], spec["image_size"], mean=spec["mean"],
                                 std=spec["std"], fpn_channels=spec["fpn_channels"],
                                 head_channels=spec["head_channels"], anchor_sizes=spec["anchor_sizes"],
                                 score_thresh=spec["score_thresh"], detections_per_img=spec["detections_per_img"],
                                 **common)


def parameter_groups(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict]:
    """SGD groups: the backbone at ``lr * backbone_lr_scale``, the new heads at ``lr`` (trainable only)."""
    groups = transfer_parameters(model)
    out = [{"params": groups["heads"], "lr": lr}]
    if backbone_lr_scale > 0 and groups["backbone"]:
        out.append({"params": groups["backbone"], "lr": lr * backbone_lr_scale})
    else:
        for p in groups["backbone"]:  # a zero scale freezes the backbone outright (no BN or weight decay drift)
            p.requires_grad_(False)
    return out


def load_transfer_model(path: str | os.PathLike) -> tuple[nn.Module, ModelCard]:
    """The trained detection / segmentation model of a checkpoint (file or run folder) and its card."""
    path = ckpt.resolve_path(path)
    saved = ckpt.load(path)
    card = ckpt.read_card(saved, path)
    if card.task not in DENSE_TASKS:
        raise CheckpointError(f"{path} holds a {card.task} ({card.architecture}), not a detection or segmentation "
                              "model; fine-tune one with `vipr transfer detect|instance|segment --checkpoint` it")
    spec = card.architecture_kwargs
    model = build_transfer_model(spec, create_backbone(spec["backbone"], **spec["backbone_kwargs"]))
    try:
        model.load_state_dict(saved["backbone"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} does not match its {card.architecture} model card: {err}") from None
    return model.eval(), card
