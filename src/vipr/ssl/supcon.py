"""SupCon: supervised contrastive learning (Khosla et al., arXiv 2004.11362), SCAN's peer.

SimCLR's two-view setup where every view of a same-label image is a positive too
(:func:`vipr.ssl.losses.supcon_loss`, L^sup_out). Unlabelled images (label -1, e.g. outside
``method.label_split``) have only their own other view as positive, so partly labelled
data trains SimCLR on the unlabelled part. Positives and negatives span the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from vipr.config import TEMPERATURE
from vipr.engine import distributed as dist
from vipr.ssl.losses import supcon_loss
from vipr.ssl.registry import MethodConfig, register_method
from vipr.ssl.simclr import SimCLR


@dataclass(frozen=True)
class SupConConfig(MethodConfig):
    name: str = "supcon"
    temperature: Annotated[float, TEMPERATURE] = 0.1  # the paper's value
    label_split: str = ""  # split file (vipr data split); "" = all train labels


@register_method("supcon", SupConConfig)
class SupCon(SimCLR):
    """SimCLR's encoder and gathers; only the loss differs."""

    def loss(self, z1: torch.Tensor, z2: torch.Tensor, batch) -> torch.Tensor:
        labels = dist.gather(batch.labels)  # (M,) global batch, in the order of z1 and z2
        return supcon_loss(torch.cat([z1, z2]), torch.cat([labels, labels]), self.config.temperature)
