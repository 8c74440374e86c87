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
