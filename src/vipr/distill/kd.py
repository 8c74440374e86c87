"""Knowledge distillation (Hinton, Vinyals and Dean, arXiv 1503.02531) from a classifier teacher.

The student gets a new linear head over the teacher's classes; on one augmented view per
image (the teacher sees the same one) the loss is
``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)``
(:func:`vipr.distill.losses.kd_loss`). Defaults T = 4 and alpha = 0.9 are RepDistiller's
(``--kd_T 4``, ``-a 0.9 -r 0.1``; Tian et al., arXiv 1910.10699). The cross-entropy uses the
labels that exist: images with label -1 (unlabelled, or outside ``method.label_split``, a
split file from ``vipr data split``) get the KD term only. The labels index the teacher's
classes, so a run with labels checks that the data's classes are the teacher's
(:mod:`vipr.distill.run`). The checkpoint ships the student backbone; its head stays here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from vipr.config import PROB, TEMPERATURE
from vipr.distill.losses import kd_loss
from vipr.distill.settings import DistillConfig
from vipr.distill.student import student_network
from vipr.distill.teacher import TeacherHolder, load_teacher, require_classifier
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder
from vipr.ssl.registry import register_method


@dataclass(frozen=True)
class KDConfig(DistillConfig):
    name: str = "kd"
    temperature: Annotated[float, TEMPERATURE] = 4.0  # T (RepDistiller --kd_T 4)
    alpha: Annotated[float, PROB] = 0.9  # weight of the KL term; 1 - alpha on the labels' cross-entropy
    label_split: str = ""  # split file (vipr data split); "" = all train labels

    def classifier_needed(self) -> str:
        return f"method {self.name}"


@register_method("kd", KDConfig)
class KD(TeacherHolder, PretrainMethod, nn.Module):
    default_recipe = "moco_v2"  # one view of it, as vipr's supervised baseline

    def __init__(self, backbone: nn.Module, config: KDConfig):
        super().__init__()
        self.config, self.teacher = config, load_teacher(config.teacher)
        require_classifier(self.teacher.card, config.teacher, config.classifier_needed())
        backbone, self.student_kwargs = student_network(backbone, config)
        self.online = Encoder(backbone, nn.Linear(backbone.feature_dim, self.teacher.card.num_classes))

    def expand_views(self, specs: list) -> list:
        return specs[:1]

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        x = views[0]
        logits = self.online(x).float()
        return {"loss": kd_loss(logits, self.teacher.logits(x), batch.labels, self.config.temperature,
                                self.config.alpha)}
