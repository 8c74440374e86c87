"""Supervised pre-training: cross-entropy on the labels, the reference every table compares against.

Trained through the same loop, data and augmentation (one view of the method's recipe) as
the self-supervised methods, at the same budget. Unlabelled images (label -1, e.g. outside
``method.label_split``) are ignored; a batch without any label contributes zero loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import Range
from vipr.errors import ConfigError
from vipr.ssl.method import PretrainMethod
from vipr.ssl.moco import Encoder
from vipr.ssl.registry import MethodConfig, register_method


@dataclass(frozen=True)
class SupervisedConfig(MethodConfig):
    name: str = "supervised"
    recipe: str = "moco_v2"  # one view of it; crops and colour jitter as the other methods
    num_classes: Annotated[int, Range(0, 10**6)] = 0  # 0 = the dataset's class count
    label_split: str = ""  # split file (vipr data split); "" = all train labels
    label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.0


@register_method("supervised", SupervisedConfig)
class Supervised(PretrainMethod, nn.Module):
    default_recipe = "moco_v2"

    def __init__(self, backbone: nn.Module, config: SupervisedConfig):
        super().__init__()
        if config.num_classes < 1:
            raise ConfigError("the supervised method needs method.num_classes >= 1 (vipr pretrain sets it from the data)")
        self.config = config
        self.online = Encoder(backbone, nn.Linear(backbone.feature_dim, config.num_classes))  # the head classifies

    def expand_views(self, views: list) -> list:
        return views[:1]  # one view per image

    def forward_views(self, views: list[torch.Tensor], batch) -> dict[str, torch.Tensor]:
        labels = batch.labels
        logits = self.online(views[0]).float()
        known = labels >= 0
        if not known.any():
            return {"loss": logits.sum() * 0}
        return {"loss": F.cross_entropy(logits[known], labels[known], label_smoothing=self.config.label_smoothing)}
