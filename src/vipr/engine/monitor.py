"""The epoch monitor contract: something the trainer calls after each epoch's checkpoint.

The engine knows no evaluation: a job hands the Trainer an object following
:class:`EpochMonitor` (pre-training hands it the kNN probe of ``vipr.eval.monitor``), and the
trainer logs the scalars it returns with the epoch's record (metrics.jsonl, tracking, the
progress line). A monitor must leave the training state alone: no draws from the run's
generator or the global RNG, no gradient, no change to parameters or buffers, so that a run
with a monitor resumes exactly as one without.
"""

from __future__ import annotations

from typing import Protocol


class EpochMonitor(Protocol):
    def __call__(self, trainer, epoch: int) -> dict[str, float]:
        """Score the model after ``epoch`` (1-based; the checkpoint of that epoch is saved).

        ``trainer`` is the :class:`vipr.engine.trainer.Trainer`: ``model.deployable()``,
        ``card``, ``run_dir``, ``device``, ``step``. Returns the scalars to log (may be empty:
        a monitor that runs every N epochs returns ``{}`` in between)."""
        ...
