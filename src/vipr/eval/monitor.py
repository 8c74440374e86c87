"""Online monitoring of pre-training: a kNN probe every N epochs, and the best checkpoint kept.

``--set train.knn_every=N`` scores the backbone being trained as ``vipr eval knn`` would
(InstDisc's weighted vote, k = ``train.knn_k``, T = 0.07): the dataset's labelled train
images fit the vote, its labelled test images are scored. The labels are the source's own,
never a method's label split (the probe measures, it does not train). With
``train.keep_best=true`` the backbone of the best kNN top-1 so far is written to
``RUN/best.pt`` (atomically: weights and card, its ``evaluation`` holding the score, epoch and
step), which ``vipr eval`` / ``export`` / ``serve`` read like any checkpoint.

The probe follows the engine's monitor contract (vipr.engine.monitor): it draws no random
numbers and changes no parameter, buffer or layout of the model, so a run with it resumes
exactly. Its only state, the best score, lives in best.pt and is read back on --resume.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vipr.engine import checkpoint as ckpt
from vipr.engine import distributed as dist
from vipr.errors import ConfigError, DataError
from vipr.eval.features import extract_features
from vipr.eval.knn import knn_predict, topk_accuracy

BEST_NAME = "best.pt"
TEMPERATURE = 0.07  # as vipr eval knn's default (InstDisc, MoCo)
BATCH_SIZE = 256  # images per feature batch


@dataclass
class KnnMonitor:
    """``monitor(trainer, epoch)`` -> ``{knn_top1, knn_top5[, knn_best_top1]}`` every ``every`` epochs."""

    train_images: np.ndarray  # (N_train, 3, H, W) uint8, possibly a memmap (read a batch at a time)
    train_rows: np.ndarray | None  # its labelled rows; None: all of them
    train_labels: torch.Tensor  # (len(train_rows),) int64
    test_images: np.ndarray  # (N_test, 3, H, W) uint8
    test_rows: np.ndarray | None
    test_labels: torch.Tensor  # (len(test_rows),) int64
    num_classes: int
    every: int  # epochs between probes
    k: int  # neighbours, at most the labelled train images
    image_size: int  # the run's crop side, px
    mean: tuple
    std: tuple
    precision: str  # the training run's resolved precision
    keep_best: bool = False
    best: float | None = None  # best top-1 so far (%); read from best.pt on resume

    def __call__(self, trainer, epoch: int) -> dict[str, float]:
        if epoch % self.every:
            return {}
        scores = self.score(trainer.model.deployable(), trainer.device)
        stats = {"knn_top1": scores["top1"], "knn_top5": scores["top5"]}
        if self.keep_best:
            if self.best is None or scores["top1"] > self.best:
                self.best = scores["top1"]
                if dist.is_main():
                    save_best(trainer, {"kind": "knn", **scores, "k": self.k, "epoch": epoch, "step": trainer.step})
            stats["knn_best_top1"] = self.best
        return stats

    @torch.no_grad()
    def score(self, backbone: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """top-1 / top-5 (%) of the kNN vote on ``backbone``'s features; the backbone is left as it was."""
        was_training, layout = backbone.training, _memory_format(backbone)
        card = dict(image_size=self.image_size, mean=self.mean, std=self.std)
        common = dict(batch_size=BATCH_SIZE, device=device, precision=self.precision, progress=False, **card)
        try:
            train = extract_features(backbone, self.train_images, indices=self.train_rows, **common)  # (N, D)
            test = extract_features(backbone, self.test_images, indices=self.test_rows, **common)  # (N_test, D)
        finally:  # extract_features puts the model in eval mode and channels-last
            backbone.train(was_training).to(memory_format=layout)
        votes = knn_predict(train.to(device), self.train_labels.to(device), test.to(device), k=self.k,
                            temperature=TEMPERATURE, num_classes=self.num_classes)
        return topk_accuracy(votes, self.test_labels)


def build_monitor(config, dataset, out: Path, resume: bool, precision: str, mean, std) -> KnnMonitor | None:
    """The probe ``config.train`` asks for (None when ``knn_every`` is 0), checked against ``dataset``."""
    train_config = config.train
    if train_config.knn_every == 0:
        if train_config.keep_best:
            raise ConfigError("train.keep_best=true keeps the checkpoint of the best kNN probe, but train.knn_every "
                              "is 0 (no probe); add --set train.knn_every=N (epochs between probes)")
        return None
    train_rows, test_rows = _labelled_rows(dataset, train_config.knn_every)
    k = min(train_config.knn_k, len(train_rows))  # clamped once, quietly: the run's figures all use this k
    best = _saved_best(out / BEST_NAME) if resume and train_config.keep_best else None
    labels = (np.asarray(dataset.train.labels), np.asarray(dataset.test.labels))
    return KnnMonitor(
        train_images=dataset.train.images, train_rows=_or_all(train_rows, len(labels[0])),
        train_labels=torch.from_numpy(labels[0][train_rows]).long(),
        test_images=dataset.test.images, test_rows=_or_all(test_rows, len(labels[1])),
        test_labels=torch.from_numpy(labels[1][test_rows]).long(),
        num_classes=max(dataset.num_classes, int(labels[0].max()) + 1, int(labels[1].max()) + 1),
        every=train_config.knn_every, k=k, image_size=config.data.image_size, mean=tuple(mean), std=tuple(std),
        precision=precision, keep_best=train_config.keep_best, best=best)


def _or_all(rows: np.ndarray, n: int) -> np.ndarray | None:
    """None when ``rows`` are all ``n`` rows in order: extract_features then reads contiguous blocks."""
    return None if len(rows) == n else rows


def save_best(trainer, evaluation: dict) -> None:
    """RUN/best.pt: the deployable weights and the run's card with ``evaluation`` (no resume state)."""
    state = {name: t.detach().cpu().contiguous() for name, t in trainer.model.deployable().state_dict().items()}
    card = replace(trainer.card, evaluation=evaluation)
    ckpt.save_atomic({"format": ckpt.FORMAT, "card": card.to_dict(), "backbone": state}, trainer.run_dir / BEST_NAME)


def _labelled_rows(dataset, knn_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled train and test rows, or a one-line error naming the key."""
    fix = "use a labelled source (class folders with a val/ or test/ folder, CIFAR, an npz with y_train and y_test) " \
          "or drop train.knn_every"
    if dataset.test is None or len(dataset.test) == 0:
        raise DataError(f"train.knn_every={knn_every} probes on the test split, but {dataset.name} has none; {fix}")
    train_rows = np.flatnonzero(np.asarray(dataset.train.labels) >= 0)
    test_rows = np.flatnonzero(np.asarray(dataset.test.labels) >= 0)
    if len(train_rows) == 0 or len(test_rows) == 0:
        split = "train" if len(train_rows) == 0 else "test"
        raise DataError(f"train.knn_every={knn_every} needs labelled images, but the {split} split of "
                        f"{dataset.name} has no labels; {fix}")
    return train_rows, test_rows


def _saved_best(path: Path) -> float | None:
    """The top-1 recorded in an existing best.pt (None when there is none yet)."""
    if not path.is_file():
        return None
    return ckpt.load_card(path).evaluation.get("top1")


def _memory_format(module: torch.nn.Module) -> torch.memory_format:
    """channels_last if the module's 4-d weights are in it, else contiguous (what ``.to`` restores)."""
    weight = next((p for p in module.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
