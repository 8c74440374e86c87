"""PC-DARTS: partial channel connections and edge normalisation (``pcdarts`` strategy).

Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search",
arXiv 1907.05737 (yuhuixu1993/PC-DARTS, ``model_search.py`` and ``train_search.py``). Only
the settings differ from DARTS; the supernet takes them as parameters (vipr.nas.supernet):

* K = 4: the first C/K channels of every edge go through the mixed op, the rest bypass it
  (2x2 max-pooled on stride-2 edges), then ``channel_shuffle(groups=K)``; memory and time of
  the mixed ops drop about K times, so a larger batch fits.
* edge normalisation: node = sum_j softmax(beta)_j * MixedOp_j over the node's incoming edges;
  the genotype ranks edges by softmax(alpha) * softmax(beta) (vipr.nas.derive).
* the authors' CIFAR schedule: batch 256, weight lr 0.1, alpha Adam lr 6e-4, alpha updated
  from epoch 15 of 50 (warm-up). vipr keeps its global batch size (64 by default): pass
  ``--batch-size 256`` for the paper's setting, or scale ``strategy.lr`` with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from vipr.config import EPOCHS, LR, Range
from vipr.nas.darts import DartsSettings, DartsStrategy
from vipr.nas.strategy import register_strategy


@dataclass(frozen=True)
class PcDartsSettings(DartsSettings):
    name: str = "pcdarts"
    warmup_epochs: Annotated[int, EPOCHS] = 15
    lr: Annotated[float, LR] = 0.1  # at batch 256 (the authors' setting)
    arch_lr: Annotated[float, LR] = 6e-4
    partial_channels: Annotated[int, Range(1, 64)] = 4  # K
    edge_normalization: bool = True


register_strategy("pcdarts", PcDartsSettings)(DartsStrategy)
