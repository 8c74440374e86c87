"""MoCo v2 (Chen et al., arXiv 2003.04297; He et al., arXiv 1911.05722).

A query encoder trained by InfoNCE against keys from a momentum (EMA) copy of itself and a
queue of past keys. The queue is a buffer, so it is checkpointed with the module. Under
DDP the keys are encoded with shuffle-BN: the batch is shuffled across ranks before the
key encoder so BN statistics cannot leak which key matches which query.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import PROB, QUEUE, TEMPERATURE, Choices
from vipr.engine import distributed as dist
from vipr.ssl.losses import info_nce
from vipr.ssl.method import PretrainMethod
from vipr.ssl.neighbours import ring_enqueue
from vipr.ssl.registry import MethodConfig, projection_head, register_method


@dataclass(frozen=True)
class MoCoConfig(MethodConfig):
    name: str = "moco_v2"
    queue_size: Annotated[int, QUEUE] = 4096  # negatives; keep below the train-set size (65,536 at ImageNet scale)
    temperature: Annotated[float, TEMPERATURE] = 0.2
    momentum: Annotated[float, PROB] = 0.99  # EMA at the start, raised to momentum_final on a cosine
    momentum_final: Annotated[float, PROB] = 1.0
    symmetric: bool = True  # both views as query (solo-learn's MoCo V2+), 2x the loss signal per step
    # which keys a symmetric step enqueues: "one" (the second view's, as the asymmetric loss), "both"
    # (2 x batch per step, solo-learn: keys half as old; both terms read the queue from before the step)
    # or "sequential" (lightly's order: each term enqueues its keys, so the second term's negatives hold
    # the first term's keys, among them each query's own-view momentum key)
    enqueue: Annotated[str, Choices("one", "both", "sequential")] = "both"
    # images <= 64 px (vipr.profiles): MoCo v2's own head (no BatchNorm) at 512 wide and T 0.1; the
    # 2048-wide BatchNorm head cost 8.6 kNN points and T 0.2 5.0 on unseen photos (docs/peer_quality.md)
    SMALL_IMAGES: ClassVar[dict] = {"temperature": 0.1, "proj_hidden_dim": 512, "proj_batch_norm": False}


class MomentumEncoder(nn.Module):
    """A frozen copy of ``online`` updated as an exponential moving average of it."""

    def __init__(self, online: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(online)
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        targets, sources = list(self.encoder.parameters()), [p.detach() for p in online.parameters()]
        torch._foreach_lerp_(targets, sources, 1 - momentum)  # t = m*t + (1-m)*s, one fused pass
        for target, source in zip(self.encoder.buffers(), online.buffers()):
            target.copy_(source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a half cosine (BYOL, arXiv 2006.07733)."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


class Encoder(nn.Module):
    """Backbone features followed by a projection head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


@torch.no_grad()
def shuffled_keys(encoder: nn.Module, x: torch.Tensor):
    """Encode ``x`` with the batch shuffled across ranks (shuffle-BN), then unshuffle.

    ``encoder`` returns one (N, D) tensor or a list of them (one per feature level).
    """
    if not dist.is_distributed():
        return encoder(x)
    x_all = dist.gather(x)
    perm = dist.broadcast(torch.randperm(len(x_all), device=x.device))
    local = perm.view(dist.world_size(), -1)[dist.rank()]
    encoded = encoder(x_all[local])

    def unshuffle(keys: torch.Tensor) -> torch.Tensor:
        keys_all = dist.gather(keys)
        return keys_all[torch.argsort(perm)].view(dist.world_size(), len(x), -1)[dist.rank()]

    return [unshuffle(k) for k in encoded] if isinstance(encoded, list) else unshuffle(encoded)


@register_method("moco_v2", MoCoConfig)
class MoCoV2(PretrainMethod, nn.Module):
    default_recipe = "moco_v2"

    def __init__(self, backbone: nn.Module, config: MoCoConfig, online: nn.Module | None = None):
        super().__init__()
        self.config = config
        if online is None:
            online = Encoder(backbone, projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim,
                                                       batch_norm=config.proj_batch_norm))
        self.online = online
        self.target = MomentumEncoder(self.online)
        self.momentum = config.momentum
        self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def contrast(self, query_view: torch.Tensor, key_view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, keys) for one query/key pairing of the two views."""
        k = self.keys(key_view)
        return info_nce(self.queries(query_view), k, self.queue.clone().detach(), self.config.temperature), k

    def queries(self, view: torch.Tensor) -> torch.Tensor:
        """(N, proj_dim) L2-normalised float32 projections of the online encoder."""
        return F.normalize(self.online(view).float(), dim=1)

    def keys(self, view: torch.Tensor) -> torch.Tensor:
        """(N, proj_dim) L2-normalised float32 projections of the momentum encoder (shuffle-BN under DDP)."""
        return F.normalize(shuffled_keys(self.target, view).float(), dim=1)

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        loss, keys = self.contrast(views[0], views[1])
        if not self.config.symmetric:
            self.enqueue(keys)
            return {"loss": loss}
        mode = self.config.enqueue
        if mode == "sequential":
            self.enqueue(keys)  # the second term's negatives now hold these keys
        loss_b, keys_b = self.contrast(views[1], views[0])
        if mode == "both":
            keys = torch.cat([keys, keys_b])
        elif mode == "sequential":
            keys = keys_b  # the first term's keys are in already
        self.enqueue(keys)
        return {"loss": (loss + loss_b) / 2}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries with the keys of every rank (a ring buffer)."""
        ring_enqueue(self.queue, self.queue_ptr, dist.gather(keys))

    def on_step_end(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.config.momentum, self.config.momentum_final, progress)
        self.target.update(self.online, self.momentum)
