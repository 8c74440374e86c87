"""Weighted k-nearest-neighbour classification on frozen features, and top-k accuracy.

The monitor every instance-discrimination paper reports (InstDisc, MoCo, solo-learn,
lightly): no training, so it measures the features and nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from vipr.embedding import cosine_topk


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a temperature-weighted kNN vote (Wu et al., InstDisc, arXiv 1805.01978, eq. 8).

    Features are L2-normalised, so ``s_i = cos(f_test, f_i)``. Over the ``k`` training
    samples ``N_k`` with the largest ``s_i``, the score of class ``c`` is

        score_c = sum_{i in N_k} exp(s_i / T) * [y_i == c]

    as in MoCo's and solo-learn's kNN monitors (T = 0.07, k = 200 by default). ``k`` is
    clipped to the number of training samples, with a warning. Test rows are processed ``chunk_size`` at
    a time, so memory is ``chunk_size x N_train`` similarities.

    Args:
        train_features: (N_train, D) float.
        train_labels: (N_train,) int64 in [0, num_classes).
        test_features: (N_test, D) float, on the same device.
        k: neighbours per test sample.
        temperature: T in exp(s / T).
        num_classes: C.
        chunk_size: test rows per similarity matmul.

    Returns:
        (N_test, C) float32 scores; ``argmax`` is the prediction.

    Examples:
        >>> train = torch.eye(3); labels = torch.tensor([0, 1, 2])
        >>> knn_predict(train, labels, torch.tensor([[1.0, 0.1, 0.0]]), k=1, num_classes=3).argmax(1)
        tensor([0])
    """
    if len(train_features) == 0:
        raise ValueError("knn_predict needs at least one training sample")
    if k < 1 or not temperature > 0:
        raise ValueError(f"knn_predict needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    k = clamped_k(k, len(train_features))
    train_labels = train_labels.to(train_features.device).long()
    # (N_test, k) each: similarities and train rows of the k nearest
    top_sim, top_idx = cosine_topk(test_features, train_features, k, chunk_size=chunk_size, normalize=True)
    weights = (top_sim / temperature).exp()  # (N_test, k)
    scores = torch.zeros(len(test_features), num_classes, device=train_features.device)
    return scores.scatter_add_(1, train_labels[top_idx], weights)  # (N_test, C)


def clamped_k(k: int, num_train: int) -> int:
    """``min(k, num_train)``, warning when that changes ``k``: a vote over every train sample is another classifier."""
    if k > num_train:
        warnings.warn(f"k={k} neighbours asked for, but there are only {num_train} train samples: the vote uses "
                      f"all {num_train} (pass --k {num_train} or less to choose it yourself)", stacklevel=3)
    return min(k, num_train)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}``: how often the label is among the ``k`` highest scores.

    ``k`` is clipped to the number of classes (top-5 of a 3-class problem is top-3, i.e. 100%);
    the key keeps the asked-for ``k``.

    Args:
        scores: (N, C) class scores or logits.
        labels: (N,) int64.
    """
    labels = labels.to(scores.device).long()
    if len(labels) == 0:
        return {f"top{k}": 0.0 for k in ks}
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (N, max k)
    hits = ranked == labels[:, None]  # (N, max k)
    return {f"top{k}": 100.0 * int(hits[:, : min(k, scores.shape[1])].any(1).sum()) / len(labels) for k in ks}
