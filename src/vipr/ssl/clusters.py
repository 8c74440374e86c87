"""Spherical k-means on a feature bank and CLIM's center-wise selection of neighbour positives.

CLIM (Li et al., "Center-wise Local Image Mixture", arXiv 2011.02697): cluster the L2-normalised
features (k = 1000 at ImageNet scale, redone every few epochs), then keep, among an anchor's
nearest neighbours, only those in its cluster and close to the cluster's centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def kmeans(x: Tensor, k: int, *, iters: int = 20, seed: int = 0, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Spherical (cosine) k-means with k-means++ initialisation.

    Centres are the re-normalised means of their members; a point goes to the centre of largest
    cosine similarity. Clusters that empty out are re-seeded with the points farthest from their
    own centre. Stops early when no assignment changes. Deterministic for a ``seed`` (the random
    draws come from a seeded CPU generator; on CUDA the float sums may vary in the last bits).

    Args:
        x: (N, D) features, L2-normalised (re-normalised here anyway).
        k: number of clusters, ``1 <= k <= N``.
        iters: at most this many assign/update rounds.
        seed: seeds the k-means++ draws.
        chunk_size: rows per similarity matmul when assigning.

    Returns:
        ``(centroids (k, D) float32 L2-normalised, assignment (N,) int64 in [0, k))``.

    Examples:
        >>> x = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0]]), dim=1)
        >>> kmeans(x, 2)[1].tolist() in ([0, 0, 1], [1, 1, 0])
        True
    """
    if not 1 <= k <= len(x):
        raise ValueError(f"kmeans needs 1 <= k <= N; got k={k} for N={len(x)} points")
    x = F.normalize(x.float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    centroids = kmeans_plus_plus(x, k, generator)
    similarity, assignment = assign(x, centroids, chunk_size)
    for _ in range(iters):
        centroids = update_centroids(x, assignment, similarity, k)
        similarity, new_assignment = assign(x, centroids, chunk_size)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    return centroids, assignment  # assignment is always to the returned centroids


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """(k, D) initial centres: each next one drawn with probability ~ squared cosine distance.

    Arthur & Vassilvitskii (2007), with ``d(x, c) = 1 - cos(x, c)``; uniform when every point
    already coincides with a centre (fewer distinct points than k).
    """
    first = int(torch.randint(len(x), (1,), generator=generator))
    chosen = [first]
    nearest = 1 - x @ x[first]  # (N,) cosine distance to the closest chosen centre
    for _ in range(1, k):
        weights = nearest.clamp(min=0).square().cpu().double()
        if weights.sum() <= 0:
            weights = torch.ones(len(x), dtype=torch.double)
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, 1 - x @ x[nxt])
    return x[chosen].clone()


def assign(x: Tensor, centroids: Tensor, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """``(similarity (N,), assignment (N,) int64)``: the most similar centre of each row, chunked."""
    best = [(chunk @ centroids.T).max(dim=1) for chunk in torch.split(x, chunk_size)]  # (B, k) each
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def update_centroids(x: Tensor, assignment: Tensor, similarity: Tensor, k: int) -> Tensor:
    """(k, D) normalised member means; empty clusters take the points farthest from their centre.

    Args:
        x: (N, D) normalised points.
        assignment: (N,) int64 cluster of each point.
        similarity: (N,) cosine similarity of each point to its current centre.
        k: number of clusters.
    """
    sums = torch.zeros(k, x.shape[1], device=x.device).index_add_(0, assignment, x)  # (k, D)
    centroids = F.normalize(sums, dim=1)
    empty = torch.bincount(assignment, minlength=k) == 0  # (k,)
    if empty.any():
        farthest = similarity.topk(int(empty.sum()), largest=False).indices  # distinct points
        centroids[empty] = x[farthest]
    return centroids


@torch.no_grad()
def center_wise_candidates(
    assignment: Tensor,
    centroids: Tensor,
    x: Tensor,
    neighbours: Tensor,
    *,
    rule: str = "anchor",
) -> Tensor:
    """CLIM's center-wise local selection: which neighbours may serve as an anchor's positive.

    Neighbour ``j`` of anchor ``i`` (cosine distance ``d(p) = 1 - cos(x_p, c_{a(p)})`` of a point to
    its own cluster centre) is a candidate when it shares the anchor's cluster and

    - ``rule="anchor"`` (the rule as the paper states it): ``d(j) <= d(i)``, closer to
      the centre than the anchor itself — so the anchor nearest its centre gets no candidates;
    - ``rule="mean"`` (the alternative reading, used by an independent implementation):
      ``d(j) <= mean of d over the cluster``, the neighbour lies in the cluster's denser core.

    Args:
        assignment: (N,) int64 cluster of each point.
        centroids: (k, D) cluster centres (normalised here).
        x: (N, D) features (normalised here).
        neighbours: (N, K) int64 indices into ``x`` of each anchor's neighbours.
        rule: ``"anchor"`` or ``"mean"``.

    Returns:
        (N, K) bool mask over ``neighbours``.
    """
    if rule not in ("anchor", "mean"):
        raise ValueError(f"rule must be 'anchor' or 'mean', got {rule!r}")
    x, centroids = F.normalize(x.float(), dim=1), F.normalize(centroids.float(), dim=1)
    distance = 1 - (x * centroids[assignment]).sum(1)  # (N,)
    if rule == "anchor":
        limit = distance  # (N,)
    else:
        count = torch.bincount(assignment, minlength=len(centroids)).clamp(min=1)
        cluster_mean = torch.zeros(len(centroids), device=x.device).index_add_(0, assignment, distance) / count
        limit = cluster_mean[assignment]  # (N,)
    same_cluster = assignment[neighbours] == assignment[:, None]  # (N, K)
    return same_cluster & (distance[neighbours] <= limit[:, None])
