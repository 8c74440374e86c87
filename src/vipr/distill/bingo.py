"""BINGO: bag of instances aggregation (Xu et al., arXiv 2107.01691, ICLR 2022), on vipr's CsMl.

The authors' code (``haohang96/bingo``) is the CsMl training code with the momentum key
encoder replaced by the frozen teacher, so this is :class:`vipr.ssl.hsa.HSA` with
``stages=()`` (CsMl as released) and the teacher in the key encoder's place: the neighbour
table is built from the teacher's pooled features of centre views of the whole train split
(the bag: each image's ``neighbours`` nearest, exact cosine kNN; vipr.ssl.neighbours / bank),
and the student's queries are contrasted against teacher keys and a queue of teacher keys.

Exact (as the release): the student is the query encoder, the frozen teacher the key encoder;
three terms averaged: the anchor's query and a drawn neighbour's query, each against {own
teacher key, the other's teacher key} weighted (0.5, 0.5) (``lam``), and a CutMix query
(Beta(2, 2)) of the two weighted by area; only the anchor's key is enqueued; T = 0.2, 5
neighbours; the student head Linear(d, 2048)-ReLU-Linear (no BatchNorm).
Approximate: (1) the teacher is in eval mode and has no projection head, so keys are its
pooled backbone features (the release keeps the teacher's MoCo head, 128-d, and leaves its
BatchNorm in train mode, hence its shuffle-BN; here BN statistics cannot leak, so no shuffle);
(2) BINGO's first 11 epochs (``epoch > 10``) weight each query's own key 1 and the other 0 but
keep all three terms; here those epochs are plain distillation, anchor query against its own
teacher key (HSA's warm-up, ``warmup_epochs`` 11) and the bag starts after; (3) CutMix boxes
are drawn per image (the release: one box per batch); (4) queue 4,096, at most a quarter of
the split (the release: 65,536). The bank is computed once: the teacher does not change, so
every refresh would give the same table (``refresh_every`` is 10^6 epochs; the release
precomputes it, ``compute_knn.py``). Cost per step: 3 student and 2 teacher passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import COUNT, EPOCHS, STAGE, Range
from vipr.distill.settings import DistillConfig, capped_queue
from vipr.distill.student import student_network
from vipr.distill.teacher import TeacherHolder, load_teacher
from vipr.ssl.hsa import HSA, HSAConfig
from vipr.ssl.neighbours import refresh_if_due
from vipr.ssl.registry import register_method


@dataclass(frozen=True)
class BingoConfig(HSAConfig, DistillConfig):
    name: str = "bingo"
    stages: Annotated[tuple[int, ...], STAGE] = ()  # no hierarchical levels (CsMl as released)
    stage_weights: Annotated[tuple[float, ...], Range(0, 100)] = ()
    warmup_epochs: Annotated[int, EPOCHS] = 11  # own-key-only epochs before the bag (BINGO: epoch > 10)
    refresh_every: Annotated[int, COUNT] = 10**6  # a frozen teacher's bank never changes: build it once
    proj_hidden_dim: Annotated[int, Range(1, 2**16)] = 2048  # BINGO's student head
    proj_batch_norm: bool = False  # proj_dim is unused: the head ends at the teacher's width


@register_method("bingo", BingoConfig)
class Bingo(TeacherHolder, HSA):
    def __init__(self, backbone: nn.Module, config: BingoConfig):
        teacher = load_teacher(config.teacher)
        backbone, student_kwargs = student_network(backbone, config)
        super().__init__(backbone, replace(config, proj_dim=teacher.feature_dim))  # queries and keys: teacher width
        del self.target  # HSA's momentum encoder: the frozen teacher encodes the keys
        self.teacher, self.student_kwargs = teacher, student_kwargs

    def bind(self, views, data) -> None:
        super().bind(views, data)
        if data is not None:
            self.queue = capped_queue(self.queue, len(data.images))

    def level_keys(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(self.teacher.features(x), dim=1)]  # one level: stages=()

    def on_epoch_start(self, epoch: int) -> dict:
        return refresh_if_due(self.table, epoch, self.teacher.module, self.data)

    def on_step_end(self, progress: float) -> None:
        pass  # no momentum encoder to update
