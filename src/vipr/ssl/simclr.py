"""SimCLR (Chen et al., arXiv 2002.05709): NT-Xent between two views over the global batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from vipr.config import TEMPERATURE
from vipr.engine import distributed as dist
from vipr.ssl.losses import nt_xent
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder
from vipr.ssl.registry import MethodConfig, projection_head, register_method


@dataclass(frozen=True)
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    temperature: Annotated[float, TEMPERATURE] = 0.2  # 0.1-0.5 in the paper; 0.2 as solo-learn's CIFAR recipe


@register_method("simclr", SimCLRConfig)
class SimCLR(PretrainMethod, nn.Module):
    default_recipe = "simclr"

    def __init__(self, backbone: nn.Module, config: SimCLRConfig):
        super().__init__()
        self.config = config
        self.online = Encoder(backbone, projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim,
                                                       batch_norm=config.proj_batch_norm))

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        # Negatives come from every rank's batch; gradients flow back to each rank's share.
        z1 = dist.gather_with_grad(self.online(views[0]).float())
        z2 = dist.gather_with_grad(self.online(views[1]).float())
        return {"loss": self.loss(z1, z2, batch)}

    def loss(self, z1: torch.Tensor, z2: torch.Tensor, batch) -> torch.Tensor:
        """NT-Xent of the global batch's projections, (M, D) each."""
        return nt_xent(z1, z2, self.config.temperature)
