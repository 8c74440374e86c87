"""Feature banks, exact kNN, spherical k-means and CLIM's center-wise selection (vipr.ssl.bank/clusters)."""

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from vipr.data.augment import eval_transform
from vipr.ssl.bank import compute_bank, knn_indices
from vipr.ssl.clusters import center_wise_candidates, kmeans, update_centroids

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n: int, side: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8)


def test_bank_equals_a_direct_computation_in_chunks():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = _images(10)
    bank = compute_bank(encoder, images, image_size=8, mean=MEAN, std=STD, batch_size=3, progress=False)
    with torch.no_grad():
        direct = F.normalize(encoder(eval_transform(torch.from_numpy(images), 8, MEAN, STD)), dim=1)
    assert bank.features.shape == (10, 5) and bank.features.dtype == torch.float32
    torch.testing.assert_close(bank.features, direct, atol=1e-5, rtol=1e-5)
    assert bank.seconds >= 0 and bank.features.grad_fn is None


def test_bank_encodes_on_the_given_device():
    """The images go to ``device`` before the encoder sees them (on a GPU the encoder's weights are there)."""
    seen = []

    def encoder(x):
        seen.append(x.device.type)
        return torch.ones(len(x), 4, device=x.device)

    bank = compute_bank(encoder, _images(5), image_size=8, batch_size=2, device="meta", progress=False)
    assert seen == ["meta"] * 3 and bank.features.device.type == "meta"


def _brute_force_knn(queries, bank, k, exclude_self=False):
    rows = []
    for i, q in enumerate(queries):
        sims = [(float(q @ b), j) for j, b in enumerate(bank) if not (exclude_self and j == i)]
        rows.append([j for _, j in sorted(sims, key=lambda s: -s[0])[:k]])
    return torch.tensor(rows)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_matches_brute_force_across_chunks(exclude_self):
    torch.manual_seed(1)
    bank = F.normalize(torch.randn(40, 6), dim=1)
    queries = bank[:25] if exclude_self else F.normalize(torch.randn(25, 6), dim=1)
    found = knn_indices(queries, bank, 5, exclude_self=exclude_self, chunk_size=7)
    assert found.dtype == torch.long and torch.equal(found, _brute_force_knn(queries, bank, 5, exclude_self))
    if exclude_self:
        assert not (found == torch.arange(25)[:, None]).any()


def test_knn_rejects_too_many_neighbours():
    bank = F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="k must be in 1..3"):
        knn_indices(bank, bank, 4, exclude_self=True)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_gives_the_same_neighbours(exclude_self):
    pytest.importorskip("faiss")
    torch.manual_seed(2)
    bank = F.normalize(torch.randn(60, 8), dim=1)
    queries = bank[:30] if exclude_self else F.normalize(torch.randn(30, 8), dim=1)
    ours = knn_indices(queries, bank, 4, exclude_self=exclude_self)
    assert torch.equal(knn_indices(queries, bank, 4, exclude_self=exclude_self, use_faiss=True), ours)


def _blobs(per_blob: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:3]  # (3, 8), 90 degrees apart
    labels = torch.arange(3).repeat_interleave(per_blob)
    return F.normalize(centres[labels] + 0.05 * torch.randn(len(labels), 8, generator=g), dim=1), labels


def test_kmeans_recovers_three_blobs_deterministically():
    x, labels = _blobs()
    centroids, assignment = kmeans(x, 3, seed=0)
    clusters = {tuple(sorted(set(assignment[labels == c].tolist()))) for c in range(3)}
    assert clusters == {(0,), (1,), (2,)}  # each blob one cluster, all three distinct: a permutation
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(3))
    again = kmeans(x, 3, seed=0)
    assert torch.equal(again[0], centroids) and torch.equal(again[1], assignment)


def test_empty_cluster_is_reseeded_with_the_farthest_point():
    x = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.5], [0.0, 1.0]]), dim=1)
    assignment = torch.tensor([0, 0, 0, 1])  # cluster 2 empty
    similarity = torch.tensor([1.0, 0.99, 0.5, 1.0])  # point 2 is farthest from its centre
    centroids = update_centroids(x, assignment, similarity, 3)
    assert torch.equal(centroids[2], x[2]) and torch.equal(centroids[1], x[3])


def _polar(degrees):
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_center_wise_selection_on_a_hand_made_set():
    # points 0..3 at 0, 10, 20, 30 degrees around centre (1, 0); points 4, 5 at 90, 100 around (0, 1).
    # Cosine distance to the centre: 0, .015, .060, .134 (mean .052) and 0, .015 (mean .008).
    x, centroids = _polar([0, 10, 20, 30, 90, 100]), _polar([0, 90])
    assignment = torch.tensor([0, 0, 0, 0, 1, 1])
    neighbours = torch.tensor([[1, 2, 4], [0, 2, 3], [1, 3, 4], [2, 1, 4], [5, 3, 0], [4, 3, 2]])
    anchor = center_wise_candidates(assignment, centroids, x, neighbours, rule="anchor")
    mean = center_wise_candidates(assignment, centroids, x, neighbours, rule="mean")
    assert anchor.tolist() == [[False, False, False],  # the anchor at the centre has no candidate
                               [True, False, False],
                               [True, False, False],
                               [True, True, False],  # anchor farthest out: both same-cluster neighbours
                               [False, False, False],
                               [True, False, False]]
    assert mean.tolist() == [[True, False, False],  # only points 0, 1 (and 4) are inside the mean distance
                             [True, False, False],
                             [True, False, False],
                             [False, True, False],
                             [False, False, False],
                             [True, False, False]]
    with pytest.raises(ValueError, match="rule must be"):
        center_wise_candidates(assignment, centroids, x, neighbours, rule="median")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_bank_is_full_and_in_index_order(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children import the worker by name
    import _bank_worker

    images = _images(7, side=8, seed=3)  # 7 images over 2 ranks: shards of 4 and 3, one padded row
    mp.spawn(_bank_worker.compute_bank_on_rank, args=(2, _free_port(), images, str(tmp_path)), nprocs=2)
    single = compute_bank(_bank_worker.channel_means, images, image_size=8, progress=False).features
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), single)
