"""BYOL (Grill et al., arXiv 2006.07733): predict a slow-moving target's projection, no negatives.

The online network (backbone + projector) feeds a predictor; the target network is an
exponential moving average of the online one (no predictor, no gradient). The loss
regresses the online prediction of each view onto the target projection of the other
(eq. 2), summed over both view orders as in the paper. The EMA momentum rises from
``momentum`` to ``momentum_final`` on a half cosine over the run: 0.99 -> 1.0 is the
small-data setting (solo-learn's CIFAR recipe); the paper starts at 0.996 for ImageNet's
many more steps per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from torch import nn

from vipr.config import DIM, PROB
from vipr.ssl.losses import byol_loss
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder, MomentumEncoder, cosine_momentum
from vipr.ssl.registry import MethodConfig, projection_head, register_method


@dataclass(frozen=True)
class BYOLConfig(MethodConfig):
    name: str = "byol"
    proj_hidden_dim: Annotated[int, DIM] = 4096  # projector and predictor: Linear(4096)-BN-ReLU-Linear(256), as the paper
    proj_dim: Annotated[int, DIM] = 256
    pred_hidden_dim: Annotated[int, DIM] = 4096
    momentum: Annotated[float, PROB] = 0.99  # target EMA at the start, raised to momentum_final on a cosine
    momentum_final: Annotated[float, PROB] = 1.0
    # images <= 64 px (vipr.profiles): projector and predictor 1,024 wide, as lightly's CIFAR recipe; at 10
    # epochs on the photo set the paper's 4,096 cost 11 kNN points (docs/peer_quality.md)
    SMALL_IMAGES: ClassVar[dict] = {"proj_hidden_dim": 1024, "pred_hidden_dim": 1024}


@register_method("byol", BYOLConfig)
class BYOL(PretrainMethod, nn.Module):
    default_recipe = "byol"  # asymmetric blur / solarize between the two views (paper, table 6)

    def __init__(self, backbone: nn.Module, config: BYOLConfig):
        super().__init__()
        self.config = config
        self.online = Encoder(backbone, projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim,
                                                       batch_norm=config.proj_batch_norm))
        self.predictor = projection_head(config.proj_dim, config.pred_hidden_dim, config.proj_dim)
        self.target = MomentumEncoder(self.online)
        self.momentum = config.momentum

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        # Each view goes through its own forward pass, so BatchNorm statistics stay per view.
        p1, p2 = (self.predictor(self.online(v)).float() for v in views[:2])  # (N, proj_dim) each
        with torch.no_grad():
            z1, z2 = (self.target(v).float() for v in views[:2])  # (N, proj_dim) each
        return {"loss": byol_loss(p1, z2) + byol_loss(p2, z1)}

    def on_step_end(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.config.momentum, self.config.momentum_final, progress)
        self.target.update(self.online, self.momentum)
