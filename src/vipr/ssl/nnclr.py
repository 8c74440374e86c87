"""NNCLR (Dwibedi et al., arXiv 2104.14548): the nearest neighbour from a support set is the positive.

SimCLR with one change of positive: the anchor for image i is the nearest neighbour,
in a queue of past projections (the support set), of view 1's projection, and it must
pick out the prediction of view 2 of the same image among the predictions of the whole
batch. Symmetrised by swapping the views and averaging, as solo-learn and VISSL do.
After each step the L2-normalised projections of view 1, gathered from every rank, enter
the support set. The support set is a registered buffer, so checkpoints hold it.

Choices the paper leaves open: until the first enqueue the support set is empty, so the
first step uses the batch's own projections as neighbours (NN(z) = z, i.e. SimCLR with a
predictor) rather than random vectors; the projector is 3 layers (2048-2048-256) ending
in a Linear without BatchNorm. The paper trains with BYOL's augmentations (solo-learn
too); the default here is SimCLR's, and ``method.recipe=byol`` selects BYOL's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import DIM, QUEUE, TEMPERATURE, Range
from vipr.engine import distributed as dist
from vipr.ssl.losses import nnclr_loss
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder
from vipr.ssl.neighbours import nearest_neighbour, ring_enqueue
from vipr.ssl.registry import MethodConfig, projection_head, register_method


@dataclass(frozen=True)
class NNCLRConfig(MethodConfig):
    name: str = "nnclr"
    proj_dim: Annotated[int, DIM] = 256  # projector 2048-2048-256 (proj_hidden_dim from MethodConfig), as the paper
    proj_layers: Annotated[int, Range(1, 16)] = 3
    pred_hidden_dim: Annotated[int, DIM] = 4096  # predictor 256-4096-256
    queue_size: Annotated[int, QUEUE] = 4096  # support set; keep below the train-set size (98,304 at ImageNet scale)
    temperature: Annotated[float, TEMPERATURE] = 0.2  # solo-learn's CIFAR value; 0.1 in the paper (ImageNet)


@register_method("nnclr", NNCLRConfig)
class NNCLR(PretrainMethod, nn.Module):
    default_recipe = "simclr"

    def __init__(self, backbone: nn.Module, config: NNCLRConfig):
        super().__init__()
        self.config = config
        projector = projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim, config.proj_layers,
                                    batch_norm=config.proj_batch_norm)
        self.online = Encoder(backbone, projector)
        self.predictor = projection_head(config.proj_dim, config.pred_hidden_dim, config.proj_dim)
        self.register_buffer("queue", torch.zeros(config.queue_size, config.proj_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # rows written so far, <= size

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        h1, h2 = self.online(views[0]), self.online(views[1])  # (N, proj_dim) projections
        p1, p2 = self.predictor(h1), self.predictor(h2)  # (N, proj_dim) predictions
        z1, z2 = F.normalize(h1.float(), dim=1), F.normalize(h2.float(), dim=1)  # unit projections: NN and queue
        support = self.support_set(z1)
        # Like SimCLR, every rank scores against the global batch; gradients reach each rank's share.
        nn1, nn2 = dist.gather(nearest_neighbour(z1, support)), dist.gather(nearest_neighbour(z2, support))
        p1, p2 = dist.gather_with_grad(p1.float()), dist.gather_with_grad(p2.float())
        loss = (nnclr_loss(nn1, p2, self.config.temperature) + nnclr_loss(nn2, p1, self.config.temperature)) / 2
        self.enqueue(z1.detach())
        return {"loss": loss}

    def support_set(self, z: torch.Tensor) -> torch.Tensor:
        """The filled rows of the queue; before any, the batch's own projections ``z`` (detached)."""
        filled = int(self.queue_filled)
        return self.queue[:filled] if filled else z.detach()

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Add the projections of every rank to the support set, replacing the oldest."""
        z = dist.gather(z)
        ring_enqueue(self.queue, self.queue_ptr, z)
        self.queue_filled.fill_(min(len(self.queue), int(self.queue_filled) + len(z)))
