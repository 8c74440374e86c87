"""Few-shot classification on frozen features: N-way K-shot episodes, prototype classifier.

Protocol: features of the labelled test split are extracted once; each episode draws
``ways`` classes among those with at least ``shots + queries`` images, then ``shots``
support and ``queries`` query images of each, all distinct. A class prototype is the mean
of its L2-normalised support features (Prototypical Networks, Snell et al., arXiv
1703.05175, eq. 1) and a query goes to the prototype of largest cosine similarity (in
place of eq. 2's squared Euclidean distance, as for normalised self-supervised features;
nothing is trained, so it measures the features alone). Reported: the mean query accuracy
over episodes in %, and its 95% interval ``1.96 * std / sqrt(E)`` with the sample std
(ddof 1) over the E episode accuracies, the convention of the few-shot literature. The
episodes depend only on ``seed``: the same seed scores every checkpoint on the same
episodes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.errors import ConfigError
from vipr.eval.runner import labelled_test_rows, prepare, write_run

Z_95 = 1.96  # two-sided 95% quantile of the normal distribution


def prototype_scores(support: Tensor, query: Tensor) -> Tensor:
    """Cosine similarity of each query to each class prototype.

    Args:
        support: (W, S, D) features of S support images of each of W classes.
        query: (M, D) query features.

    Returns:
        (M, W) cosine similarities; ``argmax`` is the predicted class index in 0..W-1.

    Examples:
        >>> support = torch.tensor([[[1.0, 0.0], [2.0, 0.2]], [[0.0, 1.0], [0.1, 3.0]]])
        >>> prototype_scores(support, torch.tensor([[5.0, 1.0]])).argmax(1)
        tensor([0])
    """
    prototypes = F.normalize(support.float(), dim=2).mean(dim=1)  # (W, D) mean of unit support features
    return F.normalize(query.float(), dim=1) @ F.normalize(prototypes, dim=1).T  # (M, W)


def sample_episode(class_rows: list[np.ndarray], ways: int, shots: int, queries: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one episode: ``ways`` classes of ``class_rows``, distinct images within each class.

    Returns:
        (support (W, S), query (W, Q)) int64 rows; row ``w`` holds episode class ``w``.
    """
    classes = rng.choice(len(class_rows), size=ways, replace=False)
    picks = np.stack([rng.choice(class_rows[c], size=shots + queries, replace=False) for c in classes])  # (W, S+Q)
    return picks[:, :shots], picks[:, shots:]


def fewshot_accuracy(features: Tensor, labels: np.ndarray, *, ways: int, shots: int, queries: int,
                     episodes: int, seed: int = 0) -> dict:
    """Mean accuracy (%) and 95% interval of prototype classification over ``episodes`` episodes.

    Args:
        features: (N, D) frozen features.
        labels: (N,) int class labels (>= 0).

    Returns:
        ``{"accuracy", "ci95", "std", "eligible_classes"}``, the first three in %.
    """
    _check_counts(episodes=episodes)
    class_rows = episode_classes(np.asarray(labels), ways, shots, queries)
    rng = np.random.default_rng(seed)
    unit = F.normalize(features.float(), dim=1)  # (N, D), normalised once for all episodes
    targets = torch.arange(ways).repeat_interleave(queries)  # (W*Q,) class index of each query row
    accuracies = np.empty(episodes)
    for episode in range(episodes):
        support, query = sample_episode(class_rows, ways, shots, queries, rng)
        scores = prototype_scores(unit[torch.from_numpy(support)], unit[torch.from_numpy(query.reshape(-1))])
        accuracies[episode] = 100.0 * int((scores.argmax(1) == targets).sum()) / len(targets)
    std = float(accuracies.std(ddof=1))
    return {"accuracy": float(accuracies.mean()), "ci95": Z_95 * std / math.sqrt(episodes), "std": std,
            "eligible_classes": len(class_rows)}


def episode_classes(labels: np.ndarray, ways: int, shots: int, queries: int) -> list[np.ndarray]:
    """Rows of every class with at least ``shots + queries`` images; errors when fewer than ``ways``."""
    _check_counts(ways=ways, shots=shots, queries=queries)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    if ways > len(classes):
        raise ConfigError(f"--ways {ways} but the test split has only {len(classes)} classes; "
                          f"lower --ways to at most {len(classes)}")
    need = shots + queries
    eligible = classes[counts >= need]
    if len(eligible) < ways:
        raise ConfigError(f"an episode needs --shots {shots} + --queries {queries} = {need} images of each of "
                          f"{ways} classes, but only {len(eligible)} of the {len(classes)} test classes have that "
                          f"many (the smallest has {counts.min()}); lower --shots, --queries or --ways")
    return [np.flatnonzero(labels == c) for c in eligible]


def _check_counts(**counts: int) -> None:
    minimum = {"ways": 2, "shots": 1, "queries": 1, "episodes": 2}  # 2 episodes: the least with a spread
    for name, value in counts.items():
        if int(value) != value or value < minimum[name]:
            raise ConfigError(f"--{name} must be an integer >= {minimum[name]}, got {value!r}")


def run_fewshot(*, checkpoint: str, data: str, ways: int = 5, shots: int = 5, queries: int = 15,
                episodes: int = 600, seed: int = 0, backbone: str | None = None, image_size: int | None = None,
                out: str | Path | None = None, batch_size: int = 256, device: str = "auto",
                precision: str = "auto", progress: bool = True) -> dict:
    """``vipr eval fewshot``: episodes on the frozen features of ``data``'s labelled test split.

    Returns the metrics (``accuracy`` and ``ci95`` in %, ``top1`` = ``accuracy``); with
    ``out``, also writes metrics.json, eval_config.json and env.json there.
    """
    args = {"kind": "fewshot", "checkpoint": str(checkpoint), "data": data, "backbone": backbone,
            "image_size": image_size, "ways": ways, "shots": shots, "queries": queries, "episodes": episodes,
            "seed": seed, "batch_size": batch_size, "device": device, "precision": precision}
    setup = prepare(checkpoint, data, backbone, image_size, device, precision, progress)
    rows = labelled_test_rows(setup.dataset)
    labels = setup.dataset.test.labels[rows]
    _check_counts(episodes=episodes)  # fail on the options before the features cost anything
    episode_classes(labels, ways, shots, queries)
    features = setup.features(setup.dataset.test, rows, batch_size=batch_size, progress=progress, desc="test features")
    result = fewshot_accuracy(features, labels, ways=ways, shots=shots, queries=queries, episodes=episodes, seed=seed)
    metrics = {**setup.metrics("fewshot", args), **result, "top1": result["accuracy"], "ways": ways, "shots": shots,
               "queries": queries, "episodes": episodes, "seed": seed, "num_test": len(rows),
               "num_classes": len(np.unique(labels)), "precision": setup.resolved_precision,
               "seconds": setup.seconds()}
    if out is not None:
        write_run(out, args, metrics)
    return metrics
