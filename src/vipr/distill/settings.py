"""What every distillation method adds to a method's settings: its teacher and, optionally, a NAS student.

A distillation method is a pre-training method (``vipr.ssl.register_method``) whose settings
subclass :class:`DistillConfig`; ``vipr distill`` offers exactly those (:func:`distill_methods`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from vipr.config import DIM, Range, from_dict
from vipr.ssl.registry import MethodConfig, list_methods


@dataclass(frozen=True)
class DistillConfig(MethodConfig):
    teacher: str = ""  # required: a run folder, a checkpoint .pt or a registered NAME@ALIAS (vipr.distill.teacher)
    # a vipr-genotype/1 JSON (vipr nas search): the student is the darts_net of it (model.backbone darts_net)
    student_genotype: str = ""
    student_channels: Annotated[int, DIM] = 16  # darts_net's initial channels C for a genotype student
    student_layers: Annotated[int, Range(0, 1000)] = 0  # its cells; 0: a per-cell genotype's count, else 8

    def classifier_needed(self) -> str:
        """Why this configuration needs a classifier teacher ("" when it does not), for the error message."""
        return ""


def distill_methods() -> list[str]:
    """The registered methods whose settings are a DistillConfig (``vipr distill --method``)."""
    return [name for name in list_methods() if isinstance(from_dict(MethodConfig, {"name": name}), DistillConfig)]


def queue_rows(queue_size: int, num_train: int) -> int:
    """Rows a teacher-embedding queue keeps: ``queue_size``, at most a quarter of the train split.

    The queue holds embeddings of other images; once it is a large share of the split it also
    holds the teacher's embedding of an earlier view of the step's own image, a near-duplicate
    of the positive counted as a negative. A quarter keeps that to at most a quarter of the
    steps; 4,096 applies from 16,384 images up (CIFAR: 4,096; SEED's 65,536 on ImageNet is 5%).
    """
    return max(1, min(queue_size, num_train // 4))


def capped_queue(queue: torch.Tensor, num_train: int) -> torch.Tensor:
    """The first ``queue_rows`` rows of a freshly initialised (K, D) queue buffer."""
    return queue[:queue_rows(len(queue), num_train)].clone()
