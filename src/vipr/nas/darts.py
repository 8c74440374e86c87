"""DARTS: differentiable architecture search with bilevel optimisation (``darts`` strategy).

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", arXiv 1806.09055
(quark0/darts, ``train_search.py``): weights learn on one half of the train split with SGD
(lr 0.025, momentum 0.9, weight decay 3e-4, cosine per epoch to 0.001, gradient norm clipped
at 5); alpha learns on the other half with Adam (architect.py), first or second order.

``BilevelSearch`` (one supernet, its weight optimizer and its architect) is the part that
darts, pcdarts and pdarts share; the strategies only differ in settings and stages. The
engine (vipr.engine.trainer, through vipr.nas.search_task) checkpoints both optimizers and
sets the weights' learning rate each epoch from ``learning_rates``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.config import BELOW_ONE, EPOCHS, GRAD_CLIP, LR, PROB, SEARCH_EPOCHS, WEIGHT_DECAY, Choices, Range, to_dict
from vipr.engine.device import precision_autocast
from vipr.errors import ConfigError
from vipr.nas.architect import Architect
from vipr.nas.config import SearchConfig, StrategySettings
from vipr.nas.derive import supernet_genotype
from vipr.nas.genotype import Genotype
from vipr.nas.strategy import LabelledViews, SearchContext, register_strategy
from vipr.nas.supernet import Supernet, SupernetSpec


@dataclass(frozen=True)
class DartsSettings(StrategySettings):
    name: str = "darts"
    epochs: Annotated[int, SEARCH_EPOCHS] = 50
    warmup_epochs: Annotated[int, EPOCHS] = 0
    order: Annotated[int, Choices(1, 2)] = 1  # 1: first-order alpha gradient; 2: unrolled (DARTS' best cells; keep fp32: the
    # finite-difference Hessian-vector product perturbs weights by 0.01 / ||v||, below bf16 resolution)
    lr: Annotated[float, LR] = 0.025  # weight SGD lr at batch 64, cosine-annealed per epoch to lr_min
    lr_min: Annotated[float, Range(0, 100)] = 0.001
    momentum: Annotated[float, PROB] = 0.9
    weight_decay: Annotated[float, WEIGHT_DECAY] = 3e-4
    grad_clip: Annotated[float, GRAD_CLIP] = 5.0  # max L2 norm of the weight gradient
    arch_lr: Annotated[float, LR] = 3e-4  # Adam on alpha
    arch_betas: Annotated[tuple[float, float], BELOW_ONE] = (0.5, 0.999)
    arch_weight_decay: Annotated[float, WEIGHT_DECAY] = 1e-3
    partial_channels: Annotated[int, Range(1, 64)] = 1  # K (PC-DARTS); 1 = every channel through the mixed op
    edge_normalization: bool = False  # PC-DARTS betas

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (first order) or 2 (second order), got {self.order}")
        if self.lr <= 0 or self.arch_lr <= 0 or self.lr_min < 0 or self.grad_clip <= 0:
            raise ValueError("lr, arch_lr and grad_clip must be > 0 and lr_min >= 0")

    def validate(self, config: SearchConfig) -> None:
        supernet_spec(config, num_classes=2).check()


def supernet_spec(config: SearchConfig, num_classes: int, **changes) -> SupernetSpec:
    """The SupernetSpec a search config describes; ``changes`` override fields (P-DARTS stages)."""
    s, n = config.strategy, config.network
    fields = dict(channels=n.channels, layers=n.layers, num_classes=num_classes, steps=n.steps,
                  partial_channels=getattr(s, "partial_channels", 1),
                  edge_normalization=getattr(s, "edge_normalization", False))
    return SupernetSpec(**{**fields, **changes})


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """CosineAnnealingLR(T_max=epochs, eta_min=lr_min) at ``epoch`` (as stepped in train_search.py)."""
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


class BilevelSearch:
    """A supernet with its SGD (weights) and Architect (alpha): arch_step / weight_step / predict."""

    def __init__(self, spec: SupernetSpec, settings: DartsSettings, context: SearchContext):
        s, device = settings, context.device
        self.settings, self.precision, self.device = s, context.precision, device
        self.channels_last = context.config.train.channels_last
        self.model = Supernet(spec).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weights = self.model.weight_parameters()
        self.w_optimizer = torch.optim.SGD(self.weights, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        self.architect = Architect(self.model.arch_parameters(), self.weights, self.w_optimizer, s.arch_lr,
                                   s.arch_betas, s.arch_weight_decay, s.order)

    @property
    def lr(self) -> float:
        """The weights' current learning rate (xi of the unrolled step), as the engine set it."""
        return self.w_optimizer.param_groups[0]["lr"]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"weights": self.w_optimizer, "alpha": self.architect.optimizer}

    def _logits(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision_autocast(self.device, self.precision):
            return self.model(images).float()

    def loss(self, batch: LabelledViews) -> Tensor:
        images, labels = batch
        return F.cross_entropy(self._logits(images), labels)

    def arch_step(self, train: LabelledViews, val: LabelledViews) -> dict[str, float]:
        self.model.train()
        loss = self.architect.step(self.loss, train, val, xi=self.lr)
        return {"arch_loss": float(loss)}

    def weight_step(self, train: LabelledViews) -> dict[str, float]:
        self.model.train()
        images, labels = train
        logits = self._logits(images)
        loss = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True, materialize_grads=True)
        for p, g in zip(self.weights, grads):
            p.grad = g  # alpha gets no gradient from the weight step
        torch.nn.utils.clip_grad_norm_(self.weights, self.settings.grad_clip)
        self.w_optimizer.step()
        self.w_optimizer.zero_grad(set_to_none=True)
        acc = (logits.detach().argmax(1) == labels).float().mean()  # on the augmented weight batch
        return {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        self.model.eval()
        return self._logits(images)

    def state_dict(self) -> dict:
        """The supernet with alpha; the optimizers are the engine's to save (``optimizers``)."""
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


@register_strategy("darts", DartsSettings)
class DartsStrategy:
    """DARTS (and PC-DARTS, whose settings switch on K and edge normalisation): one supernet."""

    uses_val_split = True

    def __init__(self, context: SearchContext):
        self.context, self.settings = context, context.settings
        self.search = BilevelSearch(supernet_spec(context.config, context.num_classes), self.settings, context)

    @property
    def total_epochs(self) -> int:
        return self.settings.epochs

    def begin_epoch(self, epoch: int) -> None:
        pass

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.search.optimizers()

    def learning_rates(self, epoch: int) -> dict[str, float]:
        s = self.settings
        return {"weights": cosine_lr(epoch, s.epochs, s.lr, s.lr_min)}

    def arch_active(self, epoch: int) -> bool:
        return epoch >= self.settings.warmup_epochs

    def arch_step(self, train: LabelledViews, val: LabelledViews | None) -> dict[str, float]:
        if val is None:
            raise ConfigError("DARTS needs a held-out batch for the alpha step (bilevel optimisation)")
        return self.search.arch_step(train, val)

    def weight_step(self, train: LabelledViews) -> dict[str, float]:
        return self.search.weight_step(train)

    def end_epoch(self, epoch: int) -> dict:
        return {"lr": self.search.lr}

    def done(self) -> bool:
        return False

    def genotype(self) -> Genotype:
        return supernet_genotype(self.search.model, self.provenance())

    def genotypes(self) -> list[Genotype]:
        return [self.genotype()]

    def provenance(self) -> dict:
        return {**self.context.provenance, "epochs": self.total_epochs, "settings": to_dict(self.settings)}

    def predict(self, images: Tensor) -> Tensor:
        return self.search.predict(images)

    def state_dict(self) -> dict:
        return {"search": self.search.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.search.load_state_dict(state["search"])
