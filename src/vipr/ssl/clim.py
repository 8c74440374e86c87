"""CLIM: Center-wise Local Image Mixture (Li et al., arXiv 2011.02697), on MoCo v2.

Positives beyond the anchor's own key come from its semantic neighbourhood, but only from
the reliable part of it, and only through image mixture:

1. **Centre-wise local selection.** Every ``refresh_every`` epochs (from ``warmup_epochs`` on),
   a bank of the momentum encoder's pooled features of every train image is clustered by
   spherical k-means; an anchor's k nearest neighbours are candidates only if they share its
   cluster and lie closer to the cluster centre than the anchor itself. This is the rule the
   paper states ("closer to the anchor's cluster centre"); ``rule="mean"`` selects the other
   reading (closer than the cluster's mean distance). An anchor may end up without candidates
   (the one nearest its centre always does); it then trains as plain MoCo.
2. **Mixture.** With probability ``mix_prob``, a box of a candidate's query view, of area
   ``1 - lambda`` with ``lambda ~ Beta(mix_alpha, mix_alpha)``, is pasted into the anchor's query
   view (CutMix); the loss is ``lambda * InfoNCE(q_mix, k_anchor) + (1 - lambda) *
   InfoNCE(q_mix, k_positive)`` with lambda the anchor's actual pixel share. Mixing acts as
   label smoothing against wrong neighbours.
3. **Multi-resolution.** The query is drawn at the training size and at ``low_res_ratio`` of
   it (224 and 160 px at ImageNet scale), each mixed with its own box; the loss is the mean of
   the two. Keys stay at full resolution.

Per step after the first refresh: two query passes (one at about half the pixels) and two
key passes (anchor and positive). Not symmetrised.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import torch

from vipr.config import COUNT, COUNT_OR_OFF, FRACTION, NEIGHBOURS, PROB, TEMPERATURE, Choices
from vipr.errors import ConfigError
from vipr.ssl.clusters import center_wise_candidates, kmeans
from vipr.ssl.losses import weighted_info_nce
from vipr.ssl.mixing import cutmix, cutmix_boxes, draw_beta
from vipr.ssl.neighbour_moco import NeighbourMoCo, NeighbourMoCoConfig
from vipr.ssl.registry import register_method


@dataclass(frozen=True)
class CLIMConfig(NeighbourMoCoConfig):
    name: str = "clim"
    neighbours: Annotated[int, NEIGHBOURS] = 10  # nearest neighbours examined per anchor
    clusters: Annotated[int, COUNT_OR_OFF] = 0  # k-means k; 0 = N // 100 clamped to 2..1000 (1,000 at ImageNet scale)
    rule: Annotated[str, Choices("anchor", "mean")] = "anchor"  # anchor | mean, see the module docstring
    refresh_every: Annotated[int, COUNT] = 10  # epochs between feature-bank refreshes (plain multi-resolution MoCo before)
    mix_prob: Annotated[float, PROB] = 0.8  # share of anchors (with a candidate) mixed with one
    mix_alpha: Annotated[float, TEMPERATURE] = 0.2  # lambda ~ Beta(a, a)
    low_res_ratio: Annotated[float, FRACTION] = 160 / 224  # side of the second query crop / training side

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rule not in ("anchor", "mean"):
            raise ConfigError(f"method.rule must be 'anchor' or 'mean', got {self.rule!r}")
        if not 0 <= self.mix_prob <= 1 or self.mix_alpha <= 0 or not 0 < self.low_res_ratio <= 1:
            raise ConfigError("method.mix_prob must be in [0, 1], method.mix_alpha > 0 and method.low_res_ratio "
                              f"in (0, 1]; got {self.mix_prob}, {self.mix_alpha}, {self.low_res_ratio}")


def auto_clusters(num_images: int) -> int:
    """k-means k when none is set: about 100 images per cluster, between 2 and 1,000."""
    return int(min(1000, max(2, num_images // 100)))


@register_method("clim", CLIMConfig)
class CLIM(NeighbourMoCo):
    def __init__(self, backbone, config: CLIMConfig):
        super().__init__(backbone, config, select=self.center_wise)

    def expand_views(self, views: list) -> list:
        """The recipe's query and key views, plus the query view at the lower resolution."""
        low = max(1, round(views[0].size * self.config.low_res_ratio))
        return [views[0], views[1], replace(views[0], size=low)]

    def center_wise(self, features: torch.Tensor, neighbours: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        k = self.config.clusters or auto_clusters(len(features))
        centroids, assignment = kmeans(features, min(k, len(features)), seed=self.table.bank_epoch + 1)
        return center_wise_candidates(assignment, centroids, features, neighbours, rule=self.config.rule)

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        query, key, query_low = views
        generator = self.views.generator  # the run's: neighbour draws, mixing and boxes resume exactly
        k_anchor = self.keys(key)
        positives, found = self.table.draw(batch.indices, generator)
        mixing = found.cpu() & (torch.rand(len(found), generator=generator) < self.config.mix_prob)
        lam = torch.where(mixing, draw_beta(len(found), self.config.mix_alpha, generator), torch.ones(len(found)))
        if self.table.ready:  # the same on every rank, so the key pass below stays collective under DDP
            pos_query, pos_key, pos_query_low = self.views(self.data.fetch(positives), [0, 1, 2])
            k_positive = self.keys(pos_key)
        else:
            pos_query, pos_query_low, k_positive = query, query_low, k_anchor
        queue = self.queue.clone().detach()
        loss = torch.zeros((), device=query.device)
        for q_view, p_view in ((query, pos_query), (query_low, pos_query_low)):
            mixed, anchor_share = cutmix(q_view, p_view, cutmix_boxes(lam, *q_view.shape[-2:], generator))
            loss = loss + weighted_info_nce(self.queries(mixed), k_anchor, k_positive, anchor_share, queue,
                                            self.config.temperature) / 2
        self.enqueue(k_anchor)
        return {"loss": loss, "mixed": mixing.float().mean()}
