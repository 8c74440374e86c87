"""HSA / CsMl: Hierarchical Semantic Aggregation (Xu et al., arXiv 2012.02733), on MoCo v2.

Several positives per anchor, taken from its semantic neighbourhood, and aligned at several
depths. Following the authors' release (haohang96/CSML):

- every ``refresh_every`` epochs (from ``warmup_epochs`` on; plain MoCo before), a bank of the
  momentum encoder's pooled features of centre views of every train image gives each image its
  top-``neighbours`` exact kNN; each step one of them is drawn per anchor and augmented twice;
- three InfoNCE terms share the queue: the anchor's query against {own key, neighbour key}
  weighted ``(1 - w, w)``; the neighbour's query against both, the same way; a CutMix query
  (a box of the neighbour's query view pasted into the anchor's, ``lambda ~ Beta(2, 2)``)
  against both, weighted by area ``(lambda, 1 - lambda)``; the loss is their mean. Only the
  anchor's key is enqueued. Cost: 3 query and 2 key passes per step (MoCo: 1 + 1).

The hierarchical part, which the release lacks, is built from the paper's description:
the outputs of the backbone stages in ``stages`` (via ``forward_intermediates``) are pooled
and get their own projection heads, momentum copies and queues, and the same multi-positive
loss is applied there with weights ``stage_weights`` (the final embedding has weight 1), so
similar images are pulled together at earlier layers too. ``stages=()`` gives CsMl as released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import PROB, STAGE, TEMPERATURE, Range
from vipr.errors import ConfigError
from vipr.ssl.losses import info_nce, weighted_info_nce
from vipr.ssl.mixing import cutmix, cutmix_boxes, draw_beta
from vipr.ssl.moco import shuffled_keys
from vipr.ssl.neighbour_moco import NeighbourMoCo, NeighbourMoCoConfig
from vipr.ssl.neighbours import SelectFn, ring_enqueue
from vipr.ssl.registry import projection_head, register_method
from vipr.engine import distributed as dist


@dataclass(frozen=True)
class HSAConfig(NeighbourMoCoConfig):
    name: str = "hsa"
    neighbour_weight: Annotated[float, PROB] = 0.5  # w: weight of the neighbour's key against the own key
    mix: bool = True  # the CutMix query term
    mix_alpha: Annotated[float, TEMPERATURE] = 2.0  # lambda ~ Beta(a, a)
    stages: Annotated[tuple[int, ...], STAGE] = (1, 2)  # backbone stages (0-based) with their own heads and losses
    stage_weights: Annotated[tuple[float, ...], Range(0, 100)] = (0.5, 0.5)  # loss weight of each of those stages

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.stages) != len(self.stage_weights):
            raise ConfigError(f"method.stages {list(self.stages)} and method.stage_weights {list(self.stage_weights)} "
                              "need the same length")
        if not 0 <= self.neighbour_weight <= 1 or self.mix_alpha <= 0:
            raise ConfigError(f"method.neighbour_weight must be in [0, 1] and method.mix_alpha > 0; got "
                              f"{self.neighbour_weight}, {self.mix_alpha}")


class LevelEncoder(nn.Module):
    """Backbone with a projection head on the final features and one on each chosen stage.

    ``forward(x)`` is the final projection (as :class:`vipr.ssl.moco.Encoder`);
    ``forward_levels(x)`` returns the projections of every level, stages first, final last.
    """

    def __init__(self, backbone: nn.Module, config: HSAConfig):
        super().__init__()
        dims = getattr(backbone, "stage_dims", None)
        if config.stages and dims is None:
            raise ConfigError(f"{type(backbone).__name__} has no stage_dims; use method.stages=[] with it")
        if any(not -len(dims) <= s < len(dims) for s in config.stages):
            raise ConfigError(f"method.stages {list(config.stages)} out of range for a backbone with {len(dims)} stages")
        self.backbone, self.stages = backbone, tuple(config.stages)
        self.head = projection_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_dim,
                                    batch_norm=config.proj_batch_norm)
        self.stage_heads = nn.ModuleList(projection_head(dims[s], config.proj_hidden_dim, config.proj_dim,
                                                         batch_norm=config.proj_batch_norm)
                                         for s in self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.stages:
            return [self(x)]
        outputs = self.backbone.forward_intermediates(x, [*self.stages, -1])  # one pass, stage maps
        pooled = [torch.flatten(F.adaptive_avg_pool2d(o, 1), 1) for o in outputs]  # last = forward_features
        return [head(p) for head, p in zip([*self.stage_heads, self.head], pooled)]


@register_method("hsa", HSAConfig)
class HSA(NeighbourMoCo):
    def __init__(self, backbone: nn.Module, config: HSAConfig, select: SelectFn | None = None):
        super().__init__(backbone, config, select=select, online=LevelEncoder(backbone, config))
        levels = len(config.stages)
        self.level_weights = [*config.stage_weights, 1.0]
        self.register_buffer("stage_queue", F.normalize(torch.randn(levels, config.queue_size, config.proj_dim), dim=2))

    def level_queries(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(z.float(), dim=1) for z in self.online.forward_levels(x)]

    def level_keys(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(z.float(), dim=1) for z in shuffled_keys(self.target.encoder.forward_levels, x)]

    def queues(self) -> list[torch.Tensor]:
        return [q.clone().detach() for q in self.stage_queue] + [self.queue.clone().detach()]

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        anchor_q, anchor_k = views[0], views[1]
        if not self.table.ready:  # warm-up: plain MoCo at every level
            keys = self.level_keys(anchor_k)
            terms = [info_nce(q, k, queue, self.config.temperature)
                     for q, k, queue in zip(self.level_queries(anchor_q), keys, self.queues())]
        else:
            keys, terms = self.neighbour_terms(anchor_q, anchor_k, batch)
        loss = sum(w * t for w, t in zip(self.level_weights, terms))
        self.enqueue_levels(keys)
        return {"loss": loss, "final_loss": terms[-1].detach()}

    def neighbour_terms(self, anchor_q, anchor_k, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(anchor keys per level, loss per level) of the multi-positive step."""
        generator, b, w = self.views.generator, len(anchor_q), self.config.neighbour_weight
        positives, _ = self.table.draw(batch.indices, generator)
        neighbour_q, neighbour_k = self.views(self.data.fetch(positives), [0, 1])
        keys = self.level_keys(torch.cat([anchor_k, neighbour_k]))  # one key pass over both
        k_anchor, k_neighbour = [k[:b] for k in keys], [k[b:] for k in keys]
        queries, shares = [anchor_q, neighbour_q], [1 - w, 1 - w]
        if self.config.mix:
            lam = draw_beta(b, self.config.mix_alpha, generator)
            mixed, anchor_share = cutmix(anchor_q, neighbour_q, cutmix_boxes(lam, *anchor_q.shape[-2:], generator))
            queries.append(mixed)
            shares.append(anchor_share)
        # one query pass per set, each with its own BatchNorm statistics as MoCo's single query pass
        # (one pass over all 3 x 128 images costs 35% more per image on CPU: activations leave the cache)
        levels = [torch.cat(z) for z in zip(*(self.level_queries(q) for q in queries))]
        share = torch.cat([torch.as_tensor(s, device=anchor_q.device).expand(b) for s in shares])
        n = len(queries)  # the mean over every query of every term = the mean of the terms (equal sizes)
        terms = [weighted_info_nce(z, ka.repeat(n, 1), kn.repeat(n, 1), share, queue, self.config.temperature)
                 for z, ka, kn, queue in zip(levels, k_anchor, k_neighbour, self.queues())]
        return k_anchor, terms

    @torch.no_grad()
    def enqueue_levels(self, keys: list[torch.Tensor]) -> None:
        """Enqueue the anchor keys of every level: the stage queues advance with MoCo's, from its pointer."""
        for queue, k in zip(self.stage_queue, keys[:-1]):
            ring_enqueue(queue, self.queue_ptr.clone(), dist.gather(k))
        self.enqueue(keys[-1])  # advances queue_ptr
