"""Contrastive losses as pure functions (no state, no process group)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with a queue of negatives (MoCo, He et al., arXiv 1911.05722, eq. 1).

    ``L = -log exp(q.k+/T) / (exp(q.k+/T) + sum_{k- in queue} exp(q.k-/T))``, averaged over N.

    Args:
        query: (N, D) L2-normalised queries.
        key: (N, D) L2-normalised positive keys (no gradient expected).
        queue: (K, D) L2-normalised negative keys.
        temperature: T.

    Returns:
        Scalar loss.

    Examples:
        >>> q = F.normalize(torch.randn(4, 8), dim=1)
        >>> info_nce(q, q, F.normalize(torch.randn(16, 8), dim=1), 0.2).shape
        torch.Size([])
    """
    positive = (query * key).sum(dim=1, keepdim=True)  # (N, 1)
    negative = query @ queue.t()  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2N views (SimCLR, Chen et al., arXiv 2002.05709, eq. 1).

    For view i the positive is the other view of the same image; the negatives are the
    other 2N - 2 views. ``l(i, j) = -log exp(s_ij/T) / sum_{k != i} exp(s_ik/T)``, with s the
    cosine similarity; the loss is the mean over all 2N views.

    Args:
        z1: (N, D) projections of the first views (normalised here).
        z2: (N, D) projections of the second views.
        temperature: T.

    Returns:
        Scalar loss.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    n = len(z1)
    sim = z @ z.t() / temperature  # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised regression loss (Grill et al., arXiv 2006.07733, eq. 2).

    ``L = ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``, averaged over N; in [0, 4]. The
    target ``z`` gets no gradient (stop-gradient on the target branch). BYOL's total loss
    is this summed over both view orders, ``byol_loss(p1, z2') + byol_loss(p2, z1')``.

    Args:
        p: (N, D) online predictions of one view.
        z: (N, D) target projections of the other view.

    Returns:
        Scalar loss.

    Examples:
        >>> p = torch.randn(4, 8)
        >>> float(byol_loss(p, 3 * p)) < 1e-6
        True
    """
    cosine = F.cosine_similarity(p, z.detach(), dim=1)  # (N,)
    return (2 - 2 * cosine).mean()


def nnclr_loss(neighbours: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """NNCLR's contrastive loss (Dwibedi et al., arXiv 2104.14548, sec. 3.2, the L^NNCLR equation).

    ``L_i = -log exp(NN(z_i) . p_i^+ / T) / sum_k exp(NN(z_i) . p_k^+ / T)``, averaged over
    the N anchors: the nearest neighbour of view 1's projection is the anchor, the positive
    is the prediction of the same image's view 2, and the softmax runs over the predictions
    of the whole batch (the paper writes z^+; with the prediction head, p^+ takes its place).
    Both inputs are L2-normalised here. Symmetrise by averaging with the views swapped.

    Args:
        neighbours: (N, D) nearest neighbours NN(z_i, Q) from the support set (no gradient).
        p: (N, D) predictions of the other view, row i from the same image as ``neighbours[i]``.
        temperature: T.

    Returns:
        Scalar loss.
    """
    logits = F.normalize(neighbours.detach(), dim=1) @ F.normalize(p, dim=1).T / temperature  # (N, N)
    return F.cross_entropy(logits, torch.arange(len(p), device=p.device))
