"""A backbone's batch norms and frozen stages, set before it is wrapped for transfer.

``apply_norm(backbone, norm)`` picks how BatchNorm2d behaves (frozen, trainable, synchronised);
``freeze_stages(backbone, trainable_stages)`` stops the gradient into the first stages, as
torchvision's ``trainable_layers`` does, for every kind of vipr backbone: the built-in ones (a
``stem`` and ``stages``), a NAS genotype's network (``cells`` ending at ``stage_ends``) and a timm
model (its ``feature_info`` modules).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from vipr.config import suggest
from vipr.errors import ConfigError

# The MoCo transfer protocol (arXiv 1911.05722, sec. 4.2; DenseCL and VICRegL follow it):
# trainable BN synchronised across GPUs, no frozen stages. Frozen BN (torchvision's default for
# pre-trained backbones) leaves a random-init backbone with no normalisation at all (statistics
# stuck at 0 and 1), so it does not train, and MoCo's frozen-BN runs needed a lower lr.
DEFAULT_NORM = "syncbn"
NORMS = ("frozen", "bn", "syncbn")

_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def apply_norm(backbone: nn.Module, norm: str = DEFAULT_NORM) -> nn.Module:
    """Set the backbone's batch norms in place and return it.

    * ``frozen``: every BatchNorm2d becomes a torchvision FrozenBatchNorm2d carrying its affine
      weights and running statistics: the eval-mode BN, whatever ``.train()`` says.
    * ``bn``: unchanged, trainable BatchNorm2d (per-process batch statistics).
    * ``syncbn``: SyncBatchNorm when torch.distributed is initialised with more than one process
      on a backend other than gloo; plain BN otherwise. SyncBatchNorm runs only on accelerators
      (torch raises "SyncBatchNorm expected input tensor to be on GPU" for CPU inputs) and gloo is
      the CPU backend, so a CPU run keeps per-process statistics.

    timm's BatchNormAct2d (BN with its activation) is converted by timm's own helpers, which keep
    the activation.
    """
    if norm not in NORMS:
        raise ConfigError(f"unknown norm '{norm}'{suggest(norm, NORMS)}")
    if norm == "frozen":
        _freeze_batch_norms(backbone, lambda name: True)
    elif norm == "syncbn" and _sync_possible():
        if _holds_timm_norms(backbone):
            from timm.layers import convert_sync_batchnorm  # keeps BatchNormAct2d's activation
            return convert_sync_batchnorm(backbone)
        return nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    return backbone


def _sync_possible() -> bool:
    dist = torch.distributed
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and dist.get_backend() != "gloo")


def _holds_timm_norms(module: nn.Module) -> bool:
    return any(type(m).__module__.startswith("timm.") for m in module.modules() if isinstance(m, _BATCH_NORMS))


def frozen_copy(bn: nn.BatchNorm2d | nn.SyncBatchNorm) -> FrozenBatchNorm2d:
    """A FrozenBatchNorm2d with ``bn``'s eps, affine weights (or 1 and 0) and running statistics."""
    if bn.running_mean is None:
        raise ConfigError(f"{bn} keeps no running statistics (track_running_stats=False), so it cannot be frozen; "
                          f"use norm='bn'")
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen


def _freeze_batch_norms(root: nn.Module, selected: Callable[[str], bool], prefix: str = "") -> None:
    """Replace, in place, every batch norm under ``root`` whose qualified name ``selected`` accepts."""
    for name, child in root.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, _BATCH_NORMS) and selected(qualified):
            if type(child).__module__.startswith("timm."):
                from timm.layers import freeze_batch_norm_2d  # BatchNormAct2d -> FrozenBatchNormAct2d

                setattr(root, name, freeze_batch_norm_2d(child))
            elif type(child) in _BATCH_NORMS:
                setattr(root, name, frozen_copy(child))
            else:
                raise ConfigError(f"cannot freeze '{qualified}', a {type(child).__name__}; use norm='bn'")
        else:
            _freeze_batch_norms(child, selected, f"{qualified}.")


def stage_groups(backbone: nn.Module) -> list[list[str]]:
    """Qualified module names of the stem (group 0) and of each stage (groups 1..S), in forward order.

    S is ``len(backbone.stage_dims)``. A timm model has no separate stem (its first stage is the
    stem's output), so its group 0 is empty; its modules after the last stage (a final norm) join
    the last group.
    """
    if hasattr(backbone, "stage_ends"):  # vipr.nas.network.DartsNetwork: cells, stage k ends at cell stage_ends[k]
        starts = (0,) + tuple(end + 1 for end in backbone.stage_ends[:-1])
        return [["stem"]] + [[f"cells.{j}" for j in range(s, e + 1)] for s, e in zip(starts, backbone.stage_ends)]
    if hasattr(backbone, "stem") and hasattr(backbone, "stages"):  # vipr.models.backbones.Backbone
        return [["stem"]] + [[f"stages.{i}"] for i in range(len(backbone.stages))]
    if hasattr(getattr(backbone, "model", None), "feature_info"):  # vipr.models.timm_backbone.TimmBackbone
        return [[]] + _timm_stage_groups(backbone.model, "model.")
    raise ConfigError(f"the stages of a {type(backbone).__name__} are unknown, so they cannot be frozen; "
                      f"pass trainable_stages=None")


def _timm_stage_groups(model: nn.Module, prefix: str) -> list[list[str]]:
    """Split the model's modules, in registration order, after each feature_info module."""
    ends = [info["module"] for info in model.feature_info]
    groups: list[list[str]] = [[] for _ in ends]
    stage = 0
    for name in _disjoint_subtrees(model, ends):
        groups[stage].append(f"{prefix}{name}")
        if name == ends[stage] and stage < len(ends) - 1:
            stage += 1
    return groups


def _disjoint_subtrees(model: nn.Module, ends: list[str], prefix: str = "") -> list[str]:
    """The model's children in order, each child holding a stage-end module expanded into its own."""
    names = []
    for name, child in model.named_children():
        qualified = f"{prefix}{name}"
        if any(end.startswith(f"{qualified}.") for end in ends):
            names += _disjoint_subtrees(child, ends, f"{qualified}.")
        else:
            names.append(qualified)
    return names


def freeze_stages(backbone: nn.Module, trainable_stages: int | None = None) -> nn.Module:
    """Freeze all but the last ``trainable_stages`` stages of ``backbone`` in place, and return it.

    None trains everything. N in 0..S (S = ``len(backbone.stage_dims)``) trains the last N stages;
    the stem trains only with N == S, i.e. it goes with the first stage (torchvision counts it
    apart: a ResNet's ``trainable_layers=4`` keeps conv1 frozen, 5 trains it). Frozen parameters
    get ``requires_grad=False`` and the batch norms in frozen stages become FrozenBatchNorm2d
    (``frozen_copy``), so their statistics stay put through ``.train()`` without overriding it,
    as in torchvision's frozen stages.
    """
    if trainable_stages is None:
        return backbone
    groups = stage_groups(backbone)
    stages = len(groups) - 1
    if not 0 <= trainable_stages <= stages:
        raise ConfigError(f"trainable_stages must be None or in 0..{stages} for this backbone "
                          f"({stages} stages), got {trainable_stages}")
    frozen_groups = groups[:stages - trainable_stages + 1] if trainable_stages < stages else []
    _freeze_modules(backbone, [name for group in frozen_groups for name in group])
    return backbone


def freeze_unused_stages(backbone: nn.Module, deepest: int) -> None:
    """Freeze the stages after stage ``deepest`` (0-based), which a transfer model never runs:
    DDP fails on trainable parameters that get no gradient. Unknown stage layouts are left as they are."""
    try:
        groups = stage_groups(backbone)
    except ConfigError:
        return
    _freeze_modules(backbone, [name for group in groups[deepest + 2:] for name in group])


def _freeze_modules(backbone: nn.Module, names: list[str]) -> None:
    """requires_grad False for the parameters under ``names``; their batch norms become frozen."""
    def in_frozen(name: str) -> bool:
        return any(name == f or name.startswith(f"{f}.") for f in names)

    for name, param in backbone.named_parameters():
        if in_frozen(name):
            param.requires_grad_(False)
    _freeze_batch_norms(backbone, in_frozen)
