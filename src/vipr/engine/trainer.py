"""The one training loop: method-agnostic, device- and world-size-agnostic.

The trainer knows no method by name: a method module turns a list of augmented views into a
dict of losses. The loop owns precision, channels-last, DDP, the schedule, progress,
metrics, atomic checkpoints, exact resume, and saving on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from vipr.data.loader import read_rows
from vipr.engine import checkpoint as ckpt
from vipr.engine import distributed as dist
from vipr.engine import signals
from vipr.engine.device import precision_autocast
from vipr.engine.optim import warmup_cosine
from vipr.engine.progress import Progress
from vipr.errors import CheckpointError, Interrupted  # noqa: F401 (Interrupted: raised here, imported from here)

# (uint8 images on the device, generator, indices of the recipe's views to draw or None for all) -> views
ViewFn = Callable[[torch.Tensor, torch.Generator, "list[int] | None"], list[torch.Tensor]]


@dataclass
class TrainData:
    """What a method may look at beyond its batch: the whole train split (for feature banks).

    Methods that define ``on_epoch_start(epoch, data) -> dict`` get it before every epoch
    (also the epoch a run resumes in); each batch dict carries it as ``batch["data"]``.
    """

    images: np.ndarray  # (N, 3, H, W) uint8 train split, possibly a memory map
    labels: np.ndarray  # (N,) int64, -1 where unknown (or outside the label split)
    image_size: int  # side of the training crops, px (bank features use centre views of this side)
    device: torch.device
    precision: str = "fp32"  # resolved training precision, for bank passes too
    progress: bool = True

    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 images ``indices`` on the device, read from the store in ascending order."""
        return torch.from_numpy(read_rows(self.images, indices.cpu().numpy())).to(self.device, non_blocking=True)


@dataclass
class LoopSettings:
    epochs: int
    precision: str  # resolved: bf16 | fp16 | fp32
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = epoch ends only
    log_every: int = 10  # steps between metric lines
    progress: bool = True
    seed: int = 0


class Trainer:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader, make_views: ViewFn,
                 settings: LoopSettings, run_dir: Path, meta: dict, device: torch.device,
                 data: TrainData | None = None):
        self.model, self.optimizer, self.loader, self.data = model, optimizer, loader, data
        self.make_views, self.settings, self.run_dir, self.meta = make_views, settings, Path(run_dir), meta
        self.device = device
        self.total_steps = settings.epochs * len(loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.step = 0
        self.generator = torch.Generator().manual_seed(settings.seed * 1000 + dist.rank())
        self.wrapped = model
        if dist.is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        self._stop_signal: int | None = None

    def _lr_factor(self, step: int) -> float:
        s = self.settings
        return warmup_cosine(step, self.total_steps, s.warmup_steps, s.min_lr_ratio)

    # ---- checkpoint state -------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "rng": _gather_objects(ckpt.rng_state(self.generator))}

    def save(self) -> None:
        state = self.state()  # every rank takes part in gathering RNG states
        if dist.is_main():
            backbone = self.model.online.backbone
            ckpt.save_atomic({"format": ckpt.FORMAT, "meta": self.meta, "backbone": backbone.state_dict(),
                              "state": state}, self.run_dir / ckpt.CHECKPOINT_NAME)
        dist.barrier()

    def restore(self, path: Path) -> None:
        saved = ckpt.load(path)
        if saved["meta"].get("config_hash") != self.meta.get("config_hash"):
            raise CheckpointError(f"{path} was written with another configuration; resume with the same "
                                  "options, or start a new --out folder")
        state = saved["state"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        ckpt.set_rng_state(state["rng"][dist.rank()], self.generator)

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, progress_log) -> None:
        steps_per_epoch = len(self.loader)
        start_epoch, start_in_epoch = divmod(self.step, steps_per_epoch)
        bar = Progress(self.total_steps, initial=self.step, enabled=self.settings.progress and dist.is_main())
        try:
            with signals.handling(self._on_signal):
                for epoch in range(start_epoch, self.settings.epochs):
                    self.loader.set_epoch(epoch)
                    epoch_stats = self._run_epoch(epoch, start_in_epoch if epoch == start_epoch else 0, bar,
                                                  progress_log)
                    self.save()
                    progress_log({"epoch": epoch + 1, "step": self.step, **epoch_stats})
        except KeyboardInterrupt:
            self.save()
            raise Interrupted(f"interrupted at step {self.step}; checkpoint saved, continue with --resume") from None
        finally:
            bar.close()

    def _run_epoch(self, epoch: int, start: int, bar: Progress, progress_log) -> dict:
        self.model.train()
        t0 = time.perf_counter()
        epoch_stats = self._epoch_start_hook(epoch, bar, progress_log)
        totals, count, images = {}, 0, 0
        t_steps = time.perf_counter()
        for indices, uint8_images, labels in self.loader.iter_from(start):
            losses = self.train_step(uint8_images, labels, indices)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.detach()
            count, images = count + 1, images + len(uint8_images)
            rate = images * dist.world_size() / (time.perf_counter() - t_steps)
            if self.step % self.settings.log_every == 0 or count == 1:
                loss = float(losses["loss"].detach())
                bar.update_stats(epoch=epoch + 1, loss=loss, rate=rate)
                progress_log({"step": self.step, "epoch": epoch + 1, "loss": loss,
                              "lr": self.scheduler.get_last_lr()[0], "images_per_s": rate})
            bar.advance()
            if self.settings.checkpoint_every and self.step % self.settings.checkpoint_every == 0:
                self.save()
            if self._stop_signal is not None:
                self.save()
                raise Interrupted(f"stopped by signal {self._stop_signal} at step {self.step}; checkpoint saved, continue with --resume")
        elapsed = time.perf_counter() - t0
        means = {f"{k}_mean": float(v) / max(count, 1) for k, v in totals.items()}
        # epoch_seconds includes the epoch-start hook (a feature-bank refresh is part of the cost)
        return {**means, **epoch_stats, "epoch_seconds": elapsed,
                "images_per_s": images * dist.world_size() / max(elapsed, 1e-9)}

    def _epoch_start_hook(self, epoch: int, bar: Progress, progress_log) -> dict:
        """Run the method's ``on_epoch_start`` (feature banks, neighbour tables); show and log its stats."""
        hook = getattr(self.model, "on_epoch_start", None)
        if hook is None:
            return {}
        self.model.eval()  # banks are computed from centre views with frozen BN statistics
        stats = hook(epoch, self.data) or {}
        self.model.train()
        if stats:
            bar.note(" ".join(f"{k} {v:.3g}" for k, v in stats.items()))
            progress_log({"epoch": epoch + 1, "step": self.step, **stats})
        return stats

    def augment(self, uint8_images: torch.Tensor, which: list[int] | None = None) -> list[torch.Tensor]:
        """Views of other images (a method's neighbours), drawn with the training generator."""
        return self.make_views(uint8_images.to(self.device, non_blocking=True), self.generator, which)

    def train_step(self, uint8_images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        views = self.make_views(uint8_images.to(self.device, non_blocking=True), self.generator, None)
        batch = {"labels": labels.to(self.device), "indices": indices, "data": self.data, "augment": self.augment,
                 "generator": self.generator}
        with precision_autocast(self.device, self.settings.precision):
            losses = self.wrapped(views, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.model.on_step_end(self.step / self.total_steps)
        return losses

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum  # saved and stopped after the current step


def _gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list indexed by rank (a one-item list without a process group)."""
    if not dist.is_distributed():
        return [obj]
    out = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
