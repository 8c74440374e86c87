"""Shared evaluation fixtures: a small labelled dataset whose classes even a random-init backbone separates."""

import numpy as np
import pytest

from vipr.data.types import Dataset, ImageSplit
from vipr.eval import runner

IMAGE_SIDE = 16  # pixels
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 230]])  # one tint a class


def make_colour_split(n: int, seed: int) -> ImageSplit:
    """Noisy images tinted by class (labels cycle 0, 1, 2): separable through a random-init backbone."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(COLOURS)
    noise = rng.normal(0, 40, (n, 3, IMAGE_SIDE, IMAGE_SIDE))
    images = np.clip(COLOURS[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return ImageSplit(images, labels.astype(np.int64))


@pytest.fixture
def sigint_after(monkeypatch):
    """``sigint_after(n)``: from now, the fine-tune sends this process SIGINT (Ctrl-C) after its n-th
    training step, acted on once that step ends; ``sigint_after(None)`` restores the real step."""
    import os
    import signal

    from vipr.eval.finetune_task import FinetuneTask

    real_step = FinetuneTask.training_step

    def arm(stop_after):
        steps = []

        def step_then_signal(self, batch):
            losses = real_step(self, batch)
            steps.append(1)
            if len(steps) == stop_after:
                os.kill(os.getpid(), signal.SIGINT)
            return losses

        monkeypatch.setattr(FinetuneTask, "training_step", real_step if stop_after is None else step_then_signal)

    return arm


@pytest.fixture
def colour_split():
    """The factory ``colour_split(n, seed) -> ImageSplit``."""
    return make_colour_split


@pytest.fixture
def dataset(monkeypatch):
    """60 train and 30 test colour images in 3 classes, served by ``runner.open_dataset`` whatever SRC says."""
    ds = Dataset("synthetic:colours", make_colour_split(60, 0), make_colour_split(30, 1), ["red", "green", "blue"],
                 "d1g35t")
    monkeypatch.setattr(runner, "open_dataset", lambda src, **kw: ds)
    return ds



@pytest.fixture
def reload_classifier():
    """Load a saved classifier.pt and measure its top-1 on a dataset's test split, independently
    of the runner: ``(model, card, top1) = reload_classifier(path, dataset)``."""
    import torch

    from vipr.data.augment import eval_transform
    from vipr.models.loading import load_backbone

    def reload(path, dataset):
        model, card = load_backbone(path)
        x = eval_transform(torch.from_numpy(dataset.test.images), card.image_size, card.mean, card.std)
        with torch.no_grad():
            logits = model.eval()(x)
        return model, card, 100.0 * (logits.argmax(1).numpy() == dataset.test.labels).mean()

    return reload
