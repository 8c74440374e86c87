"""Optimizers (SGD, LARS) and the cosine learning-rate schedule with linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vipr.errors import ConfigError


class LARS(torch.optim.Optimizer):
    """LARS (You et al., arXiv 1708.03888) as used by SimCLR/BYOL: SGD whose per-layer step
    is scaled by trust * ||w|| / ||g + wd*w||. Biases and norm weights (1-D) are excluded
    from the adaptation and the weight decay, the usual practice.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), group["trust"] * w_norm / u_norm, 1.0)
                    update = update.mul(ratio)
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module | Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on weights of rank >= 2 only; biases and norm parameters get none."""
    decay, no_decay = [], []
    for p in model.parameters() if isinstance(model, nn.Module) else model:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer '{name}'; valid: sgd, lars")


class ClippedSGD(torch.optim.SGD):
    """SGD that clips the global gradient norm to ``max_norm`` first (0: no clipping).

    Under fp16 the engine's GradScaler unscales the gradients before ``step``, so the norm is
    the true one."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, max_norm: float):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):
        if self.max_norm > 0:
            nn.utils.clip_grad_norm_([p for group in self.param_groups for p in group["params"]], self.max_norm)
        return super().step(closure)


SCHEDULES = ("cosine", "step")
STEP_MILESTONES = (2 / 3, 8 / 9)  # of the steps after warm-up: detectron2's 1x (60k and 80k of 90k)
STEP_GAMMA = 0.1  # the lr factor at each milestone


def warmup_schedule(schedule: str, step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier of ``schedule``: linear warm-up, then cosine to ``min_ratio`` or x0.1 steps."""
    if schedule == "cosine" or step < warmup_steps:
        return warmup_cosine(step, total_steps, warmup_steps, min_ratio)
    if schedule != "step":
        raise ConfigError(f"unknown lr schedule '{schedule}'; valid: {', '.join(SCHEDULES)}")
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return STEP_GAMMA ** sum(progress >= m for m in STEP_MILESTONES)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear from 1/warmup to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
