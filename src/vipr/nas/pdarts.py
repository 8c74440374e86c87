"""P-DARTS: progressive DARTS, deeper supernets with fewer ops per edge (``pdarts`` strategy).

Chen, Xie, Wu and Tian, "Progressive Differentiable Architecture Search: Bridging the Depth
Gap between Search and Evaluation", arXiv 1904.12760 (chenxin061/pdarts, ``train_search.py``).

* Stages of ``stage_layers`` cells (5 / 11 / 17); stage i searches over ``stage_ops[i]`` ops
  per edge (8 / 5 / 3). After each stage the lowest-softmax ops of every edge are dropped,
  separately for normal and reduce cells; after the last stage ``none`` goes first and one
  op is kept (the genotype's op). Each stage builds a fresh supernet and alphas, as the
  authors' code does.
* Dropout after the identity skip_connect ops, base rate ``skip_dropout[i]`` per stage
  (0.1 / 0.4 / 0.7). Reading of the schedule (docs/algorithms.md#pdarts, from the authors' loop), with e the
  epoch within the stage, E = ``epochs`` per stage and W = ``warmup_epochs``:
  ``p = base * (E - e - 1) / E`` while e < W (weights only), ``p = base * exp(-0.2 (e - W))``
  after (``dropout_decay`` = 0.2).
* Final rule: at most ``max_skip`` (M = 2) skip_connects in the normal cell; while there are
  more, the chosen skip_connect with the lowest weight is zeroed and the cell re-derived (its
  edge then takes its next-best op, or loses its place to a stronger edge), as the authors'
  ``delete_min_sk_prob`` / ``keep_1_on`` / ``keep_2_branches`` loop does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from torch import Tensor

from vipr.config import BELOW_ONE, CELLS, EPOCHS, LR, PROB, SEARCH_EPOCHS, Range
from vipr.nas.config import SearchConfig
from vipr.nas.darts import BilevelSearch, DartsSettings, DartsStrategy, cosine_lr, supernet_spec
from vipr.nas.derive import supernet_genotype
from vipr.nas.genotype import Genotype, edge_list
from vipr.nas.ops import PRIMITIVES
from vipr.nas.strategy import SearchContext, register_strategy
from vipr.nas.supernet import Candidates


@dataclass(frozen=True)
class PdartsSettings(DartsSettings):
    name: str = "pdarts"
    epochs: Annotated[int, SEARCH_EPOCHS] = 25  # per stage
    warmup_epochs: Annotated[int, EPOCHS] = 10  # per stage
    arch_lr: Annotated[float, LR] = 6e-4
    stage_layers: Annotated[tuple[int, ...], CELLS] = (5, 11, 17)
    stage_ops: Annotated[tuple[int, ...], Range(2, 64)] = (8, 5, 3)  # candidate ops per edge during each stage (the genotype keeps 1)
    skip_dropout: Annotated[tuple[float, ...], BELOW_ONE] = (0.1, 0.4, 0.7)  # base dropout rate after skip_connect, per stage
    dropout_decay: Annotated[float, PROB] = 0.2  # per epoch after the warm-up
    max_skip: Annotated[int, Range(0, 64)] = 2  # M: skip_connects allowed in the final normal cell

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.stage_layers)
        if n == 0 or len(self.stage_ops) != n or len(self.skip_dropout) != n:
            raise ValueError(f"stage_layers, stage_ops and skip_dropout need one entry per stage, got "
                             f"{list(self.stage_layers)}, {list(self.stage_ops)}, {list(self.skip_dropout)}")
        ops = list(self.stage_ops)
        if ops[0] != len(PRIMITIVES) or any(b > a for a, b in zip(ops, ops[1:])) or ops[-1] < 2:
            raise ValueError(f"stage_ops must start at {len(PRIMITIVES)} (all ops), never grow, and end >= 2 "
                             f"(so a non-none op is left), got {ops}")
        if min(self.stage_layers) < 3 or not all(0 <= p < 1 for p in self.skip_dropout) or self.max_skip < 0:
            raise ValueError("every stage needs >= 3 layers, skip_dropout in [0, 1) and max_skip >= 0")

    def validate(self, config: SearchConfig) -> None:
        for layers in self.stage_layers:
            supernet_spec(config, 2, layers=layers).check()


def drop_ops(op_weights: Tensor, candidates: Candidates, keep: int, none_first: bool = False) -> Candidates:
    """Each edge keeps its ``keep`` highest-weight ops (in their original order); ``none_first``
    drops ``none`` before any other op (the authors' last stage)."""
    kept = []
    for row, names in zip(op_weights.detach().float().cpu().tolist(), candidates):
        score = [(-math.inf if (none_first and n == "none") else w) for w, n in zip(row, names)]
        best = sorted(sorted(range(len(names)), key=lambda i: -score[i])[:keep])
        kept.append(tuple(names[i] for i in best))
    return tuple(kept)


def skip_dropout_rate(base: float, epoch: int, epochs: int, warmup: int, decay: float) -> float:
    if epoch < warmup:
        return base * (epochs - epoch - 1) / epochs
    return base * math.exp(-decay * (epoch - warmup))


@register_strategy("pdarts", PdartsSettings)
class PdartsStrategy(DartsStrategy):
    """Stage-wise DARTS; the stage, its candidates and its supernet are in the checkpoint."""

    def __init__(self, context: SearchContext):
        self.context, self.settings = context, context.settings
        self.stage = 0
        self.candidates = ((PRIMITIVES,) * len(edge_list(context.config.network.steps)),) * 2  # normal, reduce
        self.search = self._build_stage()

    def _build_stage(self) -> BilevelSearch:
        s, i = self.settings, self.stage
        spec = supernet_spec(self.context.config, self.context.num_classes, layers=s.stage_layers[i],
                             skip_dropout=s.skip_dropout[i], candidates_normal=self.candidates[0],
                             candidates_reduce=self.candidates[1])
        return BilevelSearch(spec, s, self.context)

    @property
    def total_epochs(self) -> int:
        return self.settings.epochs * len(self.settings.stage_layers)

    def learning_rates(self, epoch: int) -> dict[str, float]:
        s = self.settings
        return {"weights": cosine_lr(epoch % s.epochs, s.epochs, s.lr, s.lr_min)}  # restarts every stage

    def begin_epoch(self, epoch: int) -> None:
        s, e = self.settings, epoch % self.settings.epochs
        p = skip_dropout_rate(s.skip_dropout[self.stage], e, s.epochs, s.warmup_epochs, s.dropout_decay)
        self.search.model.set_skip_dropout(p)

    def arch_active(self, epoch: int) -> bool:
        return epoch % self.settings.epochs >= self.settings.warmup_epochs

    def end_epoch(self, epoch: int) -> dict:
        stats = {"lr": self.search.lr, "stage": self.stage, "layers": self.settings.stage_layers[self.stage]}
        last_of_stage = (epoch + 1) % self.settings.epochs == 0
        if last_of_stage and self.stage + 1 < len(self.settings.stage_layers):
            model, keep = self.search.model, self.settings.stage_ops[self.stage + 1]
            self.candidates = tuple(drop_ops(model.op_weights(r), self.candidates[r], keep) for r in (0, 1))
            self.stage += 1
            self.search = self._build_stage()
        return stats

    def genotype(self) -> Genotype:
        provenance = {**self.provenance(), "stage": self.stage}
        return supernet_genotype(self.search.model, provenance, max_skip=self.settings.max_skip)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "candidates": self.candidates, "search": self.search.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.candidates = state["stage"], tuple(tuple(map(tuple, c)) for c in state["candidates"])
        self.search = self._build_stage()
        self.search.load_state_dict(state["search"])
