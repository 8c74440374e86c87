"""SCAN: Supervised Contrastive Adjustment in Neighbourhood (Wei et al., arXiv 2011.08621), on MoCo v2.

Labels guide contrastive learning without overriding appearance: an anchor's extra positive
must be both an appearance neighbour (one of its ``neighbours`` nearest images in the momentum
encoder's feature bank) and share its label. The paper's exact rule is not public in text;
this is our reading (docs/algorithms.md#scan), the same mechanism as CsMl's multi-positive loss
(:mod:`vipr.ssl.hsa`) with the neighbour set filtered by label and without mixture or stage
losses. Images without a label, or without a same-label neighbour, keep only their own key
(a second augmented pair of the same image stands in for the neighbour), so the method works
with fully or partly labelled data: ``method.label_split`` names a split file from
``vipr data split``; without one, every train label is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from vipr.config import NEIGHBOURS, STAGE, Range
from vipr.errors import DataError
from vipr.ssl.hsa import HSA, HSAConfig
from vipr.ssl.registry import register_method


@dataclass(frozen=True)
class SCANConfig(HSAConfig):
    name: str = "scan"
    neighbours: Annotated[int, NEIGHBOURS] = 20  # appearance neighbours examined per anchor; same-label ones are positives
    mix: bool = False
    stages: Annotated[tuple[int, ...], STAGE] = ()
    stage_weights: Annotated[tuple[float, ...], Range(0, 100)] = ()
    label_split: str = ""  # split file (vipr data split); "" = all train labels


def same_label(features: torch.Tensor, neighbours: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, k) bool: neighbour ``j`` of a labelled anchor ``i`` carries the anchor's label."""
    if not (labels >= 0).any():
        raise DataError("scan needs labels, but no train image has one; use a labelled source, "
                        "or pass method.label_split=FILE from `vipr data split`")
    return (labels[neighbours] == labels[:, None]) & (labels[:, None] >= 0)


@register_method("scan", SCANConfig)
class SCAN(HSA):
    def __init__(self, backbone: nn.Module, config: SCANConfig):
        super().__init__(backbone, config, select=same_label)
