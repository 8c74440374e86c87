"""A search strategy as a training task: how ``vipr nas search`` runs in the one engine.

The engine (vipr.engine.trainer.Trainer) owns the loop, the paired weight / alpha batches
(vipr.nas.search_data.PairedBatches), checkpoints, exact resume, signals, progress and the
metrics log. This task turns each step's uint8 batches into augmented views (drawn from the
generator the engine checkpoints, weight batch first) and hands them to the strategy, which
updates alpha and the weights itself: DARTS' second-order alpha gradient is no gradient of a
loss the engine could back-propagate, so the task is ``SelfStepping`` (vipr.engine.task) and
declares the strategy's optimizers and learning rates. After each epoch it runs the
strategy's epoch end (P-DARTS' stage change, GOLD-NAS' pruning), scores the supernet on the
held-out split and logs the genotype with the epoch's record.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vipr.data.loader import BatchIterator
from vipr.engine.task import TaskBase
from vipr.nas import search_data
from vipr.nas.search_data import SearchBatch
from vipr.nas.strategy import Strategy


class SearchTask(TaskBase, nn.Module):
    """``strategy`` stepped on augmented views of ``image_size`` px; ``score_loader`` gives the
    batches scored for "val acc" (at most ``eval_batches`` of them; 0: none)."""

    def __init__(self, strategy: Strategy, image_size: int, generator: torch.Generator,
                 score_loader: BatchIterator, eval_batches: int):
        super().__init__()
        self.strategy, self.image_size, self.generator = strategy, image_size, generator
        self.score_loader, self.eval_batches = score_loader, eval_batches
        self.epoch = 0

    def training_step(self, batch: SearchBatch) -> dict[str, Tensor]:
        s = self.strategy
        train = (search_data.augment(batch.train.images, self.image_size, self.generator), batch.train.labels)
        val = None
        if batch.val is not None:
            val = (search_data.augment(batch.val.images, self.image_size, self.generator), batch.val.labels)
        stats = s.arch_step(train, val) if s.arch_active(self.epoch) else {}
        stats.update(s.weight_step(train))
        # float64: the engine's epoch means then add up exactly as Python floats do
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in stats.items()}

    def on_epoch_start(self, epoch: int) -> dict:
        self.epoch = epoch
        self.strategy.begin_epoch(epoch)
        return {}

    def on_epoch_end(self, epoch: int) -> dict:
        stats = self.strategy.end_epoch(epoch)
        genotype = self.strategy.genotype()
        return {**stats, "val_acc": self.val_accuracy(), "genotype": genotype.to_dict()}

    def finished(self) -> bool:
        return bool(self.strategy.done())

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.strategy.optimizers()

    def learning_rates(self, epoch: int) -> dict[str, float]:
        return self.strategy.learning_rates(epoch)

    def deployable(self) -> nn.Module:
        """The current supernet. Never shipped: a search's checkpoint is a RunRecord, its product the genotype."""
        bilevel = getattr(self.strategy, "search", None)  # DARTS' BilevelSearch; GOLD-NAS holds `net`
        return bilevel.model if bilevel is not None else self.strategy.net

    def checkpoint_state(self) -> dict:
        return {"strategy": self.strategy.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])

    def val_accuracy(self) -> float | None:
        """Top-1 of the supernet on up to ``eval_batches`` batches of the alpha split (one-level
        strategies: of the train images); None when ``eval_batches`` is 0."""
        if self.eval_batches == 0:
            return None
        self.score_loader.set_epoch(0)
        correct = seen = 0
        batches = self.score_loader.iter_from(0)
        for n, batch in enumerate(batches):
            if n >= self.eval_batches:
                break
            logits = self.strategy.predict(search_data.evaluation(batch.images, self.image_size))
            correct, seen = correct + int((logits.argmax(1) == batch.labels).sum()), seen + len(batch)
        batches.close()
        return correct / max(seen, 1)
