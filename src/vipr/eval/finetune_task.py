"""Fine-tuning as a training task: the backbone and its standardised linear head in the one engine.

``vipr eval finetune`` (vipr.eval.finetune) hands this task to ``vipr.engine.trainer.Trainer``,
which owns the loop, the optimizer and its per-step cosine, precision, the loss guard,
progress, Ctrl-C / SIGTERM and exact resume. The task draws its training view (a random
resized crop and flip, ``vipr.data.augment``) from the generator the engine checkpoints, in
float32 at any precision, as the loop before the engine did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.data.augment import ViewSpec, augment_views
from vipr.data.batch import Batch
from vipr.engine.task import TaskBase

FORMAT = "vipr-finetune/1"  # the resume state's RunRecord format (classifier.pt is the product)


class FinetuneTask(TaskBase, nn.Module):
    """Cross-entropy of ``model`` (its head already the new one) on one augmented view a batch.

    ``epoch_losses`` holds the current epoch's step losses (checkpointed, so a resumed epoch
    keeps its earlier steps): their mean is the reported ``train_loss``.
    """

    def __init__(self, model: nn.Module, views: list[ViewSpec], mean, std, generator: torch.Generator,
                 frozen_norms: tuple[nn.Module, ...] = ()):
        super().__init__()
        self.model, self.views, self.mean, self.std, self.generator = model, views, mean, std, generator
        self.frozen_norms = frozen_norms  # BatchNorm layers kept on their running statistics while training
        self.epoch, self.epoch_losses = 0, []

    def train(self, mode: bool = True) -> FinetuneTask:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        with torch.autocast(batch.images.device.type, enabled=False):  # the view in float32 at any precision
            x = augment_views(batch.images, self.views, mean=self.mean, std=self.std,
                              generator=self.generator)[0]  # (B, 3, S, S)
        loss = F.cross_entropy(self.model(x).float(), batch.labels)
        self.epoch_losses.append(loss.detach())
        return {"loss": loss}

    def on_epoch_start(self, epoch: int) -> dict:
        if epoch != self.epoch:  # the same epoch again: a run resumed mid-epoch keeps its losses
            self.epoch, self.epoch_losses = epoch, []
        return {}

    def train_loss(self) -> float:
        """Mean step loss of the last epoch trained (NaN before any step)."""
        return float(torch.stack(self.epoch_losses).mean()) if self.epoch_losses else float("nan")

    def deployable(self) -> nn.Module:
        return self.model

    def checkpoint_state(self) -> dict:
        return {"module": self.state_dict(), "epoch": self.epoch, "epoch_losses": [t.cpu() for t in self.epoch_losses]}

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["module"])
        device = next(self.model.parameters()).device
        self.epoch, self.epoch_losses = state["epoch"], [t.to(device) for t in state["epoch_losses"]]
