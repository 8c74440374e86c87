"""SEED: self-supervised distillation (Fang et al., arXiv 2101.04731, ICLR 2021), as ``jacobswan1/SEED`` does it.

Student and frozen teacher see the same augmented view (one view per image). The student's
embedding is a projection head over its backbone, ending at the teacher's feature width,
L2-normalised; the teacher's is its pooled backbone feature, L2-normalised (a vipr checkpoint
ships the backbone without its pre-training head; SEED's teacher keeps its MoCo head, 128-d).
Over [teacher embedding of the same image; a FIFO queue of earlier teacher embeddings] the
student's softmax at tau_S = 0.2 is matched to the teacher's by soft cross-entropy
(:func:`vipr.distill.losses.seed_loss`); the batch's teacher embeddings are then enqueued.

Values, from the authors' code: tau_S 0.2 (``--temp``), tau_T 1e-4 (``--distill-t``), the head
Linear(d, d)-ReLU-Linear(d, D) with d the student's width (``--student_mlp``, no BatchNorm).
tau_T = 1e-4 means: ``t.t = 1`` is the largest entry by far, so ``p_T`` is one-hot on the
teacher's own embedding (a queue entry 0.01 less similar gets e^-100 of its mass) and the
default loss is InfoNCE with the teacher embedding as the positive and teacher-queue negatives;
a larger tau_T (0.01-0.07) also transfers how the teacher ranks the queue. Queue: 4,096 rows,
at most a quarter of the train split (:func:`vipr.distill.settings.queue_rows`; SEED: 65,536).
Exact: the loss, the same-view teacher pass each step (no cached teacher outputs), the FIFO
queue of teacher keys only. Different: the teacher has no projection head (see above); the
optimizer and schedule are pre-training's (SEED: SGD 0.03 per 256, wd 1e-4, 5 warm-up epochs).
Cost per step: one student forward/backward and one teacher forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import QUEUE, TEMPERATURE, Range
from vipr.distill.losses import seed_loss
from vipr.distill.settings import DistillConfig, capped_queue
from vipr.distill.student import student_network
from vipr.distill.teacher import TeacherHolder, load_teacher
from vipr.engine import distributed as dist
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder
from vipr.ssl.neighbours import ring_enqueue
from vipr.ssl.registry import projection_head, register_method


@dataclass(frozen=True)
class SEEDConfig(DistillConfig):
    name: str = "seed"
    queue_size: Annotated[int, QUEUE] = 4096  # teacher embeddings; at most a quarter of the train split is kept
    temperature: Annotated[float, TEMPERATURE] = 0.2  # tau_S, the student's (SEED --temp)
    teacher_temperature: Annotated[float, TEMPERATURE] = 1e-4  # tau_T (SEED --distill-t): p_T one-hot on t_i
    proj_hidden_dim: Annotated[int, Range(0, 2**16)] = 0  # 0: the student's feature width, as SEED's head
    proj_batch_norm: bool = False  # SEED's head is Linear-ReLU-Linear; proj_dim is unused (the teacher's width)


@register_method("seed", SEEDConfig)
class SEED(TeacherHolder, PretrainMethod, nn.Module):
    default_recipe = "moco_v2"  # one view of it (SEED: the teacher's own pre-training augmentation)

    def __init__(self, backbone: nn.Module, config: SEEDConfig):
        super().__init__()
        self.config, self.teacher = config, load_teacher(config.teacher)
        backbone, self.student_kwargs = student_network(backbone, config)
        width, dim = backbone.feature_dim, self.teacher.feature_dim
        self.online = Encoder(backbone, projection_head(width, config.proj_hidden_dim or width, dim,
                                                        batch_norm=config.proj_batch_norm))
        self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def bind(self, views, data) -> None:
        super().bind(views, data)
        if data is not None:
            self.queue = capped_queue(self.queue, len(data.images))

    def expand_views(self, specs: list) -> list:
        return specs[:1]  # student and teacher share the one view

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        x = views[0]
        teacher = F.normalize(self.teacher.features(x), dim=1)  # (B, D) float32
        student = F.normalize(self.online(x).float(), dim=1)  # (B, D)
        with torch.autocast(x.device.type, enabled=False):  # float32 similarities: tau_T = 1e-4 (seed_loss)
            loss = seed_loss(student, teacher, self.queue.clone(), self.config.temperature,
                             self.config.teacher_temperature)
        self.enqueue(teacher)
        return {"loss": loss}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue rows with every rank's teacher embeddings."""
        ring_enqueue(self.queue, self.queue_ptr, dist.gather(keys))
