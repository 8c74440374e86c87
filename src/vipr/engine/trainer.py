"""The one training loop: task-agnostic, device- and world-size-agnostic.

The trainer knows no method by name: it runs any :class:`vipr.engine.task.TrainingTask`
(checked when the trainer is built), calling ``training_step(batch)`` through the task's
``forward`` (the DDP-wrapped one under torchrun) on each :class:`vipr.data.batch.Batch` of
the loader. The loop owns precision, DDP, the optimizers and their schedules, progress,
metrics, atomic checkpoints, exact resume, the non-finite-loss guard, and saving on Ctrl-C /
SIGTERM. A task either returns the loss it wants minimised (one optimizer, given here) or
steps its own optimizers (``vipr.engine.task.SelfStepping``: bilevel NAS); see vipr.engine.task.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vipr.config import describe_changes
from vipr.data.batch import Batch
from vipr.engine import checkpoint as ckpt
from vipr.engine import distributed as dist
from vipr.engine import signals
from vipr.engine.card import ModelCard
from vipr.engine.device import precision_autocast
from vipr.engine.guards import LossGuard
from vipr.engine.monitor import EpochMonitor
from vipr.engine.optim import warmup_schedule
from vipr.engine.progress import Progress
from vipr.engine.resume import check_same_config
from vipr.engine.task import check_optimization, check_task
from vipr.errors import ConfigError, Interrupted  # noqa: F401 (Interrupted: imported from here)


@dataclass
class LoopSettings:
    epochs: int
    precision: str  # resolved: bf16 | fp16 | fp32
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    schedule: str = "cosine"  # cosine | step (x0.1 at 2/3 and 8/9 of the steps after warm-up; vipr.engine.optim)
    max_steps: int | None = None  # end the run at this step, mid-epoch if need be (detection's --iters)
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = epoch ends only
    epoch_checkpoints: bool = True  # False: checkpoints only every checkpoint_every steps and on a stop (a job
    # whose product is written after training, e.g. fine-tuning's classifier.pt, needs no final state)
    log_every: int = 10  # steps between metric lines; 0 = the epoch records only
    progress: bool = True
    seed: int = 0
    on_nan: str = "stop"  # stop | skip: what a non-finite loss does (vipr.engine.guards.LossGuard)
    name: str = "train"  # the progress bar's label
    ddp_find_unused: bool = False  # DDP: a step may leave parameters without gradient (a detector's mask head
    # when an image has no positive proposal); costs a graph traversal per step, so only where needed


def training_generator(seed: int) -> torch.Generator:
    """This rank's generator for augmentation and a task's own draws: ``seed * 1000 + rank``.

    Build it before the task (its view maker draws from it) and hand the same object to the
    Trainer, which checkpoints its state."""
    return torch.Generator().manual_seed(seed * 1000 + dist.rank())


class Trainer:
    """Runs a training task: ``fit`` trains to ``settings.epochs``, ``save`` / ``restore`` checkpoint it.

    ``model`` is the task (an ``nn.Module`` following vipr.engine.task.TrainingTask);
    ``optimizer`` its one optimizer, or None for a task that steps its own (``SelfStepping``);
    ``loader`` yields Batches (``set_epoch``, ``iter_from``, ``len``); ``card`` the ModelCard
    of the model it trains, or a ``checkpoint.RunRecord`` for a job that ships none (a NAS
    search); ``generator`` is the one the task's view maker draws from (``training_generator``),
    saved in every checkpoint. ``run_dir`` None: a run that keeps no checkpoint (a library call).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, loader, settings: LoopSettings,
                 run_dir: Path | None, card: ModelCard | ckpt.RunRecord, device: torch.device,
                 generator: torch.Generator | None = None, monitor: EpochMonitor | None = None):
        check_task(model)  # a missing member fails here, not at the first save
        self.self_stepping = check_optimization(model, optimizer)
        if self.self_stepping and settings.on_nan == "skip":
            raise ConfigError(f"train.on_nan=skip cannot drop a step of {type(model).__name__}: it applies its "
                              "updates inside training_step; use train.on_nan=stop")
        if settings.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {settings.epochs}: a run of no epochs trains nothing "
                              "and writes no checkpoint")
        self.model, self.optimizer, self.loader = model, optimizer, loader
        self.settings, self.card = settings, card
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.device = device
        self.total_steps = settings.epochs * len(loader)
        if settings.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.max_steps)
        self.scheduler = None if self.self_stepping else torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.step = 0
        self.generator = generator if generator is not None else training_generator(settings.seed)
        self.wrapped = model
        if dist.is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False,
                                                               find_unused_parameters=settings.ddp_find_unused)
        # a self-stepping task scales nothing: its updates happen inside training_step
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16" and not self.self_stepping)
        self.stop = signals.StopRequest()
        self.guard = LossGuard(settings.on_nan)
        self._in_step = False  # True while a step mutates state: a checkpoint then would be inconsistent
        self.monitor = monitor  # scored after each epoch's checkpoint (a kNN probe); None: no probe

    def _lr_factor(self, step: int) -> float:
        s = self.settings
        return warmup_schedule(s.schedule, step, self.total_steps, s.warmup_steps, s.min_lr_ratio)

    # ---- checkpoint state -------------------------------------------------------------
    def state(self) -> dict:
        state = {"model": self.model.checkpoint_state(), "step": self.step,
                 "rng": _gather_objects(ckpt.rng_state(self.generator))}
        if self.self_stepping:
            return {**state, "optimizers": {name: o.state_dict() for name, o in self.model.optimizers().items()}}
        return {**state, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def save(self) -> None:
        if self.run_dir is None:
            return
        state = self.state()  # every rank takes part in gathering RNG states
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)  # a job may name a folder only its first save makes
            ckpt.save_atomic({**self._header(), "state": state}, self.run_dir / ckpt.CHECKPOINT_NAME)
        dist.barrier()

    def _header(self) -> dict:
        """A model file's format, card and deployable weights; or a RunRecord's format and config."""
        if isinstance(self.card, ckpt.RunRecord):
            return {"format": self.card.format, "config": self.card.config, "config_hash": self.card.config_hash}
        return {"format": ckpt.FORMAT, "card": self.card.to_dict(), "backbone": self.model.deployable().state_dict()}

    def restore(self, path: Path) -> None:
        if isinstance(self.card, ckpt.RunRecord):
            saved = ckpt.load(path, expected_format=self.card.format)
            saved_hash, saved_config = saved["config_hash"], saved["config"]
        else:
            saved = ckpt.load(path)
            saved_card = ckpt.read_card(saved, path)
            saved_hash, saved_config = saved_card.config_hash, saved_card.config
        check_same_config(saved_hash, self.card.config_hash, path,
                          lambda: describe_changes(saved_config, self.card.config))
        state = saved["state"]
        self.model.load_checkpoint_state(state["model"])  # first: a NAS stage builds its optimizers here
        if self.self_stepping:
            for name, optimizer in self.model.optimizers().items():
                optimizer.load_state_dict(state["optimizers"][name])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        ckpt.set_rng_state(state["rng"][dist.rank()], self.generator)

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, progress_log) -> None:
        if not self._announce_start():
            return
        steps_per_epoch = len(self.loader)
        start_epoch, start_in_epoch = divmod(self.step, steps_per_epoch)
        bar = Progress(self.total_steps, initial=self.step, enabled=dist.is_main(), desc=self.settings.name,
                       bars=self.settings.progress, epoch_steps=steps_per_epoch)  # no bars: a line per epoch
        try:
            with signals.handling(self.stop):
                for epoch in range(start_epoch, self.settings.epochs):
                    if self.model.finished() or self.step >= self.total_steps:  # the task's own end, or max_steps
                        break
                    self.loader.set_epoch(epoch)
                    epoch_stats = self._run_epoch(epoch, start_in_epoch if epoch == start_epoch else 0, bar,
                                                  progress_log)
                    epoch_stats.update(self.model.on_epoch_end(epoch) or {})  # before the save: it is state
                    if self._saves_after_epoch():
                        self.save()
                    epoch_stats.update(self._run_monitor(epoch + 1, bar))
                    progress_log({"epoch": epoch + 1, "step": self.step, **epoch_stats})
                    if self.stop.requested:  # a signal in the epoch's last step: the epoch is whole now
                        raise Interrupted(f"stopped by signal {self.stop.signum} after epoch {epoch + 1} (step "
                                          f"{self.step}); checkpoint saved, continue with --resume")
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            bar.close()

    def _saves_after_epoch(self) -> bool:
        """Whether this epoch's end writes a checkpoint (always, unless ``epoch_checkpoints`` is off)."""
        every = self.settings.checkpoint_every
        return self.settings.epoch_checkpoints or self.stop.requested or bool(every and self.step % every == 0)

    def _announce_start(self) -> bool:
        """Say on stderr where a resumed run continues; False when it has nothing left to train."""
        if self.step == 0:
            return True
        if self.step >= self.total_steps:
            _say(f"already finished: {self.run_dir} holds all {self.total_steps} steps "
                 f"({self.settings.epochs} epochs); nothing to train")
            return False
        if self.model.finished():
            _say(f"already finished: {self.run_dir} ended at step {self.step} of {self.total_steps} "
                 "(the task's own end); nothing to train")
            return False
        _say(f"resumed from step {self.step} of {self.total_steps} (epoch {self.step // len(self.loader) + 1})")
        return True

    def _interrupted(self) -> Interrupted:
        """A KeyboardInterrupt the handler did not absorb (a second Ctrl-C, a test): save if the state is whole."""
        if self._in_step:  # half a step applied: the last checkpoint is the consistent state
            return Interrupted(f"interrupted during step {self.step + 1}; the last checkpoint is kept, "
                               "continue with --resume")
        self.save()
        return Interrupted(f"interrupted at step {self.step}; checkpoint saved, continue with --resume")

    def _run_epoch(self, epoch: int, start: int, bar: Progress, progress_log) -> dict:
        self.model.train()
        t0 = time.perf_counter()
        epoch_stats = self._epoch_start_hook(epoch, bar, progress_log)
        if self.self_stepping:
            self._set_learning_rates(epoch)
        totals, count, images = {}, 0, 0
        t_steps = time.perf_counter()
        for batch in self.loader.iter_from(start):
            losses = self.train_step(batch)
            if self.guard.last_finite_step == self.step:  # skipped steps stay out of the epoch means
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value.detach()
                count += 1
            images += len(batch)
            rate = images * dist.world_size() / (time.perf_counter() - t_steps)
            if self.step % max(self.settings.log_every, 1) == 0 or images == len(batch):
                loss = float(losses["loss"].detach())
                bar.update_stats(epoch=epoch + 1, loss=loss, rate=rate, lr=self._lr())
                if self.settings.log_every:
                    progress_log({"step": self.step, "epoch": epoch + 1, "loss": loss, "lr": self._lr(),
                                  "images_per_s": rate})
            bar.advance()
            if self.step >= self.total_steps:
                break  # the run's last step (max_steps may end it mid-epoch): the epoch's end follows in fit
            if self.step % len(self.loader) == 0:
                continue  # the epoch's last step: its end hook, checkpoint and a pending stop follow in fit
            if self.stop.requested:
                self.save()
                raise Interrupted(f"stopped by signal {self.stop.signum} at step {self.step}; checkpoint saved, "
                                  "continue with --resume")
            if self.settings.checkpoint_every and self.step % self.settings.checkpoint_every == 0:
                self.save()
        elapsed = time.perf_counter() - t0  # before on_epoch_end: a search's scoring is not training time
        means = {f"{k}_mean": float(v) / max(count, 1) for k, v in totals.items()}
        skipped = {"skipped_steps": self.guard.skipped} if self.guard.skipped else {}
        # epoch_seconds includes the epoch-start hook (a feature-bank refresh is part of the cost)
        return {**means, **epoch_stats, **skipped, "epoch_seconds": elapsed,
                "images_per_s": images * dist.world_size() / max(elapsed, 1e-9)}

    def _epoch_start_hook(self, epoch: int, bar: Progress, progress_log) -> dict:
        """Run the task's ``on_epoch_start`` (feature banks, neighbour tables); show and log its stats."""
        self.model.eval()  # banks are computed from centre views with frozen BN statistics
        stats = self.model.on_epoch_start(epoch) or {}
        self.model.train()
        if stats:
            bar.note(" ".join(f"{k} {v:.3g}" for k, v in stats.items()))
            progress_log({"epoch": epoch + 1, "step": self.step, **stats})
        return stats

    def _set_learning_rates(self, epoch: int) -> None:
        """A self-stepping task's learning rates for ``epoch``, on every param group of each named optimizer."""
        optimizers = self.model.optimizers()
        for name, lr in self.model.learning_rates(epoch).items():
            for group in optimizers[name].param_groups:
                group["lr"] = lr

    def _lr(self) -> float:
        """The learning rate logged with step records: the schedule's, or a self-stepping task's first optimizer's."""
        if self.scheduler is not None:
            return self.scheduler.get_last_lr()[0]
        return next(iter(self.model.optimizers().values())).param_groups[0]["lr"]

    def _run_monitor(self, epoch: int, bar: Progress) -> dict:
        """The monitor's scalars after ``epoch`` (vipr.engine.monitor), shown on the progress line."""
        stats = self.monitor(self, epoch) if self.monitor is not None else {}
        if stats:
            bar.note(" ".join(f"{k} {v:.3g}" for k, v in stats.items()))
            bar.report()  # off a terminal the epoch's line is already out: the last epoch's figure too
        return stats

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step on ``batch``: the task's forward (through DDP), the loss guard, backward, update, hooks."""
        self._in_step = True
        batch = batch.to(self.device, non_blocking=True)
        with precision_autocast(self.device, self.settings.precision):
            losses = self.wrapped(batch)  # the task's forward = training_step: it draws its own views
        apply = self.guard.check(losses["loss"], self.step + 1)  # a self-stepping task: its update is applied
        if not self.self_stepping:
            self.optimizer.zero_grad(set_to_none=True)
            if apply:
                self.scaler.scale(losses["loss"]).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.scheduler.step()  # a skipped step still counts: the schedule follows the data
        self.step += 1
        self._in_step = False  # the update is whole; the hook after it is short (an EMA, a ramp)
        if apply:
            self.model.on_step_end(self.step / self.total_steps)
        return losses


def _say(text: str) -> None:
    if dist.is_main():
        print(text, file=sys.stderr, flush=True)


def _gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list indexed by rank (a one-item list without a process group)."""
    if not dist.is_distributed():
        return [obj]
    out = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
