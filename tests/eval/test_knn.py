"""Weighted kNN against an explicit loop over InstDisc's vote, and top-k accuracy by hand."""

import math

import pytest
import torch

from vipr.eval.knn import knn_predict, topk_accuracy


def reference_knn(train, train_labels, test, k, temperature, num_classes):
    """One test sample at a time: cosine similarities, the k largest, exp(s / T) summed per class."""
    scores = torch.zeros(len(test), num_classes, dtype=torch.float64)
    for i, query in enumerate(test.double()):
        sims = [float(query @ row.double()) / (float(query.norm()) * float(row.double().norm())) for row in train]
        nearest = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        for j in nearest:
            scores[i, int(train_labels[j])] += math.exp(sims[j] / temperature)
    return scores


@pytest.mark.parametrize("k,temperature,chunk_size", [(1, 0.07, 4), (5, 0.07, 3), (12, 0.5, 1024)])
def test_knn_matches_explicit_vote(k, temperature, chunk_size):
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 8, generator=g) * 3, torch.randn(10, 8, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    got = knn_predict(train, labels, test, k=k, temperature=temperature, num_classes=4, chunk_size=chunk_size)
    want = reference_knn(train, labels, test, k, temperature, 4)
    assert got.shape == (10, 4)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_k_is_clipped_to_train_size():
    g = torch.Generator().manual_seed(1)
    train, test, labels = torch.randn(7, 5, generator=g), torch.randn(6, 5, generator=g), torch.arange(7) % 3
    with pytest.warns(UserWarning, match="k=200 neighbours asked for, but there are only 7 train samples"):
        clipped = knn_predict(train, labels, test, k=200, num_classes=3)
    torch.testing.assert_close(clipped, knn_predict(train, labels, test, k=7, num_classes=3))
    torch.testing.assert_close(clipped.double(), reference_knn(train, labels, test, 7, 0.07, 3), rtol=1e-4, atol=1e-4)


def test_knn_finds_own_class_of_duplicates():
    train = torch.eye(4)
    predicted = knn_predict(train, torch.tensor([0, 1, 2, 3]), train * 5, k=1, num_classes=4).argmax(1)
    assert predicted.tolist() == [0, 1, 2, 3]


def test_topk_accuracy_by_hand():
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: top1 hit
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.6],  # label 3: 5th of the 7 -> top5 hit only
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.6],  # label 4: 6th -> miss
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # label 3: top1 hit
    ])
    acc = topk_accuracy(scores, torch.tensor([0, 3, 4, 3]))
    assert acc == {"top1": 50.0, "top5": 75.0}


def test_top5_of_fewer_classes_counts_every_class():
    scores = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    assert topk_accuracy(scores, torch.tensor([0, 2])) == {"top1": 0.0, "top5": 100.0}
