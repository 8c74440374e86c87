"""Guards the engine runs every step: a non-finite loss stops the run (or skips the step)."""

from __future__ import annotations

import math

import torch

from vipr.engine import distributed as dist
from vipr.errors import ConfigError, TrainingError

ON_NAN = ("stop", "skip")


class LossGuard:
    """Checks each step's loss before its update is applied.

    ``stop``: a non-finite loss raises TrainingError naming the step and the last finite loss;
    the update is not applied and nothing is saved, so the last checkpoint stays the last good
    one. ``skip``: the step's optimizer update and hooks are dropped (the batch and the schedule
    still advance; buffers the forward wrote, such as queues, keep what it wrote).
    Under DDP the ranks agree: one rank's non-finite loss counts for all.
    """

    def __init__(self, policy: str = "stop"):
        if policy not in ON_NAN:
            raise ConfigError(f"train.on_nan must be one of {', '.join(ON_NAN)}; got {policy!r}")
        self.policy = policy
        self.last_finite: float | None = None  # the loss of the last finite step
        self.last_finite_step = 0  # 1-based step number; 0 = none yet
        self.skipped = 0

    def check(self, loss: torch.Tensor, step: int) -> bool:
        """True to apply step ``step``'s update (1-based), False to skip it; raises under ``stop``.

        Costs one host sync per step (the loss value), plus one all-gather of a flag under DDP."""
        value = float(loss.detach())
        finite = math.isfinite(value)
        if dist.is_distributed():
            finite = bool(dist.gather(torch.tensor([finite], device=loss.device)).all())
        if finite:
            self.last_finite, self.last_finite_step = value, step
            return True
        if self.policy == "skip":
            self.skipped += 1
            return False
        last = "no finite loss before it" if self.last_finite is None else \
            f"last finite loss {self.last_finite:.4g} at step {self.last_finite_step}"
        raise TrainingError(f"loss is {value} at step {step} ({last}); stopped without saving, the last checkpoint "
                            "is kept: lower the learning rate or check the method's settings, or pass "
                            "--set train.on_nan=skip to drop such steps")
