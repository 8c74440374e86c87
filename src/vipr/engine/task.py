"""The training-task contract: what every job the engine runs must provide.

A training task is an ``nn.Module`` (so the engine can move it, wrap it in DDP and switch
train/eval) with these members; the engine (:class:`vipr.engine.trainer.Trainer`) owns the
loop, precision, DDP, the schedule, checkpoints, resume, signals and progress::

    training_step(batch) -> dict[str, Tensor]
        batch: vipr.data.batch.Batch
            images   (B, 3, H, W) uint8 on the training device
            labels   (B,) int64, -1 where unknown
            indices  (B,) int64, rows of the train split
        returns 0-dim tensors: "loss" (what is back-propagated) and any other entry, logged
        as a scalar (its epoch mean is "<name>_mean" in metrics.jsonl). The task draws its
        own augmented views (a view maker it received when built); the engine never does.
    on_epoch_start(epoch) -> dict        optional; before every epoch (also the one a run
        resumes in), in eval mode: feature banks, neighbour tables. Returns logged stats.
    on_step_end(progress) -> None        optional; after every optimizer step, ``progress``
        = step / total steps in (0, 1]: momentum encoders, drop-path ramps.
    on_epoch_end(epoch) -> dict          optional; after the epoch's last step, before its
        checkpoint: P-DARTS' stage change, GOLD-NAS' pruning, a search's held-out score.
        Returns logged stats (JSON-able), part of the epoch's record.
    finished() -> bool                   optional (default False); True ends the run before
        its last epoch (GOLD-NAS at its FLOPs floor). Asked before every epoch, also on resume.
    deployable() -> nn.Module            the module to ship: the backbone for pre-training,
        the whole network for NAS train. Its state_dict is the checkpoint's "backbone".
    checkpoint_state() -> dict           optional; what resumes the task exactly (default:
        its state_dict: heads, momentum encoder, queues, banks).
    load_checkpoint_state(state) -> None optional; the inverse (default: load_state_dict).

The engine calls the task through its ``forward(batch)``, which :class:`TaskBase` maps to
``training_step``, so that under DDP the wrapped module's forward is what computes the loss.

Two ways to optimise, one loop. Most tasks hand the engine their loss: the engine is given
one optimizer and back-propagates ``loss``, steps the optimizer (with the fp16 gradient
scaler) and its per-step warm-up cosine schedule. A task whose update is no gradient of one
loss steps its own optimizers inside ``training_step`` (:class:`SelfStepping`): bilevel NAS,
where alpha's gradient is DARTS' unrolled, finite-difference one (vipr.nas.architect) and
the weight step must see the alpha just updated. It declares them, and the engine owns the
rest: it checkpoints and restores every optimizer by name, sets each epoch's learning rates
before the epoch's first step (also in the epoch a run resumes in), and runs the loop,
precision, the loss guard (stop only: the update is applied by then), signals, progress::

    optimizers() -> dict[str, Optimizer]     the current ones by name (P-DARTS builds new ones
        for each stage: asked again at every save and restore, after load_checkpoint_state)
    learning_rates(epoch) -> dict[str, float]   lr of the named optimizers during ``epoch``
        (every param group; {} keeps them as they are): DARTS' cosine per epoch

Examples:
    >>> class Regression(TaskBase, nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = nn.Linear(3, 1)
    ...     def training_step(self, batch):
    ...         x = batch.images.float().mean(dim=(2, 3))  # (B, 3)
    ...         return {"loss": (self.net(x).squeeze(1) - batch.labels.float()).pow(2).mean()}
    ...     def deployable(self):
    ...         return self.net
    >>> check_task(Regression())
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn
from torch.optim import Optimizer

from vipr.errors import ContractError

REQUIRED = ("training_step", "deployable")
HOOKS = ("on_epoch_start", "on_step_end", "on_epoch_end", "finished", "checkpoint_state", "load_checkpoint_state")
SELF_STEPPING = ("optimizers", "learning_rates")


@runtime_checkable
class TrainingTask(Protocol):
    def training_step(self, batch) -> dict[str, Tensor]: ...
    def on_epoch_start(self, epoch: int) -> dict: ...
    def on_step_end(self, progress: float) -> None: ...
    def on_epoch_end(self, epoch: int) -> dict: ...
    def finished(self) -> bool: ...
    def deployable(self) -> nn.Module: ...
    def checkpoint_state(self) -> dict: ...
    def load_checkpoint_state(self, state: dict) -> None: ...


@runtime_checkable
class SelfStepping(Protocol):
    """A task that steps its own optimizers in ``training_step`` (see the module docstring)."""

    def optimizers(self) -> dict[str, Optimizer]: ...
    def learning_rates(self, epoch: int) -> dict[str, float]: ...


class TaskBase:
    """No-op hooks and state_dict checkpoints; mix in before ``nn.Module``: ``class T(TaskBase, nn.Module)``."""

    def forward(self, batch) -> dict[str, Tensor]:
        return self.training_step(batch)

    def on_epoch_start(self, epoch: int) -> dict:
        return {}

    def on_step_end(self, progress: float) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> dict:
        return {}

    def finished(self) -> bool:
        return False

    def checkpoint_state(self) -> dict:
        return self.state_dict()

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state)


def check_task(task) -> None:
    """Raise ContractError naming the first member ``task`` lacks (at construction, not at the first save)."""
    name = type(task).__name__
    if not isinstance(task, nn.Module):
        raise ContractError(f"training task {name} must be an nn.Module (the engine moves, wraps and saves it)")
    for member in (*REQUIRED, *HOOKS):
        if not callable(getattr(task, member, None)):
            fix = "define it" if member in REQUIRED else "define it or mix in vipr.engine.task.TaskBase"
            raise ContractError(f"training task {name} has no {member}(); {fix} (see vipr.engine.task)")


def check_optimization(task, optimizer: Optimizer | None) -> bool:
    """True when ``task`` steps its own optimizers (no ``optimizer`` given); ContractError on a mix-up."""
    name = type(task).__name__
    declares = [m for m in SELF_STEPPING if callable(getattr(task, m, None))]
    if optimizer is None:
        missing = [m for m in SELF_STEPPING if m not in declares]
        if missing:
            raise ContractError(f"training task {name} got no optimizer and has no {missing[0]}(); pass the "
                                "optimizer to the Trainer, or let the task step its own (see vipr.engine.task)")
        return True
    if declares:
        raise ContractError(f"training task {name} steps its own optimizers ({declares[0]}()); pass optimizer=None "
                            "to the Trainer")
    return False
