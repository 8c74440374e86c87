"""The fine-tune's ``auto`` strategy: train the whole network, or keep the frozen features' linear probe,
whichever scores higher on labelled images held out from the training.

Why: on a few labelled images, training the whole network can lose what pre-training gave.
Measured on the unseen photo set (benchmarks/finetune_resnet.py, docs/peer_quality.md; ResNet-18,
32 px, 80 labelled images of 8 classes): the linear probe of a MoCo v2 backbone's frozen features
scores 70.6% top-1, the full fine-tune from the same start 57.8%, from random init 56.9%. On
builtin:digits the full fine-tune of the `tiny` net wins instead (92.2% against 84.3% with the
backbone frozen; docs/results.md). Neither choice is right everywhere, and the labels can tell
which is right here, at the cost of one more fine-tune:

1. per class of at least 2 labelled images, ``HOLDOUT_FRACTION`` of them (at least 1) are held out;
2. the linear probe (``vipr eval linear``'s fit) and the full fine-tune (the recipe) are fitted on
   the rest and scored on the held-out images; the probe wins ties (it trains nothing);
3. the winner is fitted again on every labelled image.

When no class has 2 images there is nothing to hold out, and ``auto`` runs the full fine-tune.

What it was measured to do (one seed each; docs/peer_quality.md, docs/results.md): on the ResNet-18
photo set it kept the probe (70.6% against the full fine-tune's 57.8%), but on a tie (87.5% each on
16 held-out images); from random init it kept the full fine-tune (56.9%). In the `tiny` net's study
it kept the full fine-tune in 18 of 20 pre-trained runs and the probe in 2, and both of those scored
lower on the test split than the full fine-tune (digits simclr 84.4%, photos simclr 53.9%). Held-out
images from the train split are near the fitted ones (the photo sets' train patches overlap), so
they reward fitting and see little of what the probe keeps on unseen images. Hence ``full`` is
``vipr eval finetune``'s default and ``auto`` an option.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from vipr.data.types import ImageSplit
from vipr.eval.features import extract_features
from vipr.eval.knn import topk_accuracy
from vipr.eval.linear import fit_standardized, fold_standardization
from vipr.models import Backbone

STRATEGIES = ("full", "auto")  # full: the whole network fine-tuned; auto: this module's choice
HOLDOUT_FRACTION = 0.2  # share of each class's labelled images held out to choose


def holdout_rows(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (fit, held-out) positions into ``labels``: ``round(HOLDOUT_FRACTION * n)``, at least one,
    of each class's ``n`` images held out where ``n >= 2``; classes of one image are all fitted."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = max(1, round(HOLDOUT_FRACTION * len(rows))) if len(rows) >= 2 else 0
        held.append(rows[:count])
        fit.append(rows[count:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def probe_head(model: Backbone, split: ImageSplit, num_classes: int, **features) -> nn.Linear:
    """The linear probe of ``model``'s frozen features of ``split`` (``vipr eval linear``'s fit), as a head on
    raw features. ``features``: :func:`extract_features`'s image_size, mean, std, device, precision."""
    train = extract_features(model, split.images, progress=False, **features)
    fitted, mean, std = fit_standardized(train, torch.from_numpy(split.labels).long(), num_classes)
    return fold_standardization(fitted, mean, std).requires_grad_(True)


def heldout_top1(model: Backbone, head: nn.Module, split: ImageSplit, **features) -> float:
    """Top-1 (%) of ``head`` on ``model``'s features of ``split``."""
    with torch.no_grad():
        scores = head(extract_features(model, split.images, progress=False, **features).to(features["device"]))
    return topk_accuracy(scores.detach().cpu(), torch.from_numpy(split.labels).long())["top1"]


def choose(model: Backbone, split: ImageSplit, num_classes: int, seed: int,
           finetune: Callable[[Backbone, ImageSplit], object], **features) -> dict:
    """Which of the full fine-tune and the linear probe to fit on ``split`` (see the module doc).

    ``finetune(model, split)`` runs the recipe on a model in place; ``model`` itself is left as it was.
    Returns ``{"chosen": "full"|"probe", "heldout": images held out, "heldout_top1": {"full": %,
    "probe": %}}`` (``heldout_top1`` empty when nothing could be held out).
    """
    fit_rows, held_rows = holdout_rows(split.labels, seed)
    if len(held_rows) == 0:
        return {"chosen": "full", "heldout": 0, "heldout_top1": {}}
    fit, held = labelled_split(split, fit_rows), labelled_split(split, held_rows)
    probe = heldout_top1(model, probe_head(model, fit, num_classes, **features), held, **features)
    trial = copy.deepcopy(model)
    finetune(trial, fit)
    full = heldout_top1(trial, trial.head, held, **features)
    return {"chosen": "full" if full > probe else "probe", "heldout": len(held_rows),
            "heldout_top1": {"full": round(full, 2), "probe": round(probe, 2)}}


def fit_choice(model: Backbone, split: ImageSplit, num_classes: int, chosen: str,
               finetune: Callable[[Backbone, ImageSplit], dict], **features) -> dict:
    """Fit ``chosen`` on every image of ``split``: ``finetune(model, split)``'s result, or the probe as
    ``model``'s head (nothing trained: ``{"train_loss": None, "steps": 0, "epochs": 0}``)."""
    if chosen == "full":
        return finetune(model, split)
    model.reset_head(num_classes)  # the card's class count, as the fine-tune sets it
    model.head = probe_head(model, split, num_classes, **features)
    return {"train_loss": None, "steps": 0, "epochs": 0}


def labelled_split(split: ImageSplit, rows: np.ndarray) -> ImageSplit:
    """``split`` restricted to ``rows`` (the split itself when that is all of it: no copy of a large store)."""
    if len(rows) == len(split) and np.array_equal(rows, np.arange(len(split))):
        return split
    return ImageSplit(np.ascontiguousarray(split.images[rows]), split.labels[rows].astype(np.int64))
