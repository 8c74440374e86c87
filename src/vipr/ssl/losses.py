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


def weighted_info_nce(query: torch.Tensor, key_a: torch.Tensor, key_b: torch.Tensor, weight_a: torch.Tensor,
                      queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE against two positives, weighted per sample (CLIM arXiv 2011.02697; CsMl arXiv 2012.02733).

    ``L_i = w_i * l(q_i, a_i) + (1 - w_i) * l(q_i, b_i)`` with ``l`` MoCo's InfoNCE term: each
    positive in its own softmax against the shared queue of negatives. With CutMix, ``w_i`` is
    the anchor's share of the mixed image; CsMl weighs an anchor's own and its neighbour's key
    0.5 / 0.5. ``w = 1`` gives plain MoCo. Averaged over N.

    Args:
        query: (N, D) L2-normalised queries.
        key_a, key_b: (N, D) L2-normalised positive keys (no gradient expected).
        weight_a: (N,) or scalar weight of ``key_a``, in [0, 1].
        queue: (K, D) L2-normalised negatives.
        temperature: T.

    Returns:
        Scalar loss.
    """
    # l(q, k) = log(exp(q.k / T) + sum_n exp(q.n / T)) - q.k / T; the queue's log-sum-exp is
    # computed once for both positives (one (N, K) softmax instead of two)
    negatives = torch.logsumexp(query @ queue.t() / temperature, dim=1)  # (N,)

    def term(key: torch.Tensor) -> torch.Tensor:
        positive = (query * key).sum(1) / temperature  # (N,)
        return torch.logaddexp(positive, negatives) - positive

    weight_a = torch.as_tensor(weight_a, dtype=query.dtype, device=query.device)
    return (weight_a * term(key_a) + (1 - weight_a) * term(key_b)).mean()


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float, views: int = 2) -> torch.Tensor:
    """Supervised contrastive loss, L^sup_out (Khosla et al., arXiv 2004.11362, eq. 2).

    ``L = sum_i -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/T) / sum_{a != i} exp(z_i.z_a/T)``, averaged
    over anchors i. ``z`` stacks ``views`` views of M images (row ``v * M + m``); P(i) holds the
    other views of the same image and every view of an image with the same label. Label -1
    means unlabelled: such an anchor's positives are its own other views only (SimCLR's loss),
    and it is nobody else's positive.

    Args:
        z: (views * M, D) projections (normalised here).
        labels: (views * M,) int64 labels of the rows, -1 for unlabelled.
        temperature: T.
        views: V >= 2, views per image.

    Returns:
        Scalar loss.
    """
    z = F.normalize(z.float(), dim=1)
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    image = torch.arange(n, device=z.device) % (n // views)  # (N,) which image a row shows
    same_label = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    positives = ((image[:, None] == image[None, :]) | same_label) & ~eye  # (N, N)
    logits = (z @ z.t() / temperature).masked_fill(eye, float("-inf"))  # self excluded from the denominator
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(eye, 0)
    return -((log_prob * positives).sum(1) / positives.sum(1)).mean()
