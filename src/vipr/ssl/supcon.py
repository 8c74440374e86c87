"""SupCon: supervised contrastive learning (Khosla et al., arXiv 2004.11362), SCAN's peer.

SimCLR's two-view setup where every view of a same-label image is a positive too
(:func:`vipr.ssl.losses.supcon_loss`, L^sup_out). Unlabelled images (label -1, e.g. outside
``method.label_split``) have only their own other view as positive, so partly labelled
data trains SimCLR on the unlabelled part. Positives and negatives span the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vipr.engine import distributed as dist
from vipr.ssl.losses import supcon_loss
from vipr.ssl.moco import Encoder
from vipr.ssl.registry import MethodConfig, projection_head, register_method


@dataclass(frozen=True)
class SupConConfig(MethodConfig):
    name: str = "supcon"
    temperature: float = 0.1  # the paper's value
    label_split: str = ""  # split file (vipr data split); "" = all train labels


@register_method("supcon", SupConConfig)
class SupCon(nn.Module):
    default_recipe = "simclr"

    def __init__(self, backbone: nn.Module, config: SupConConfig):
        super().__init__()
        self.config = config
        self.online = Encoder(backbone, projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim))

    def forward(self, views: list[torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        z1 = dist.gather_with_grad(self.online(views[0]).float())  # (M, D) global batch
        z2 = dist.gather_with_grad(self.online(views[1]).float())
        labels = dist.gather(batch["labels"])
        return {"loss": supcon_loss(torch.cat([z1, z2]), torch.cat([labels, labels]), self.config.temperature)}

    def on_step_end(self, progress: float) -> None:
        pass
