"""Support sets and feature queues: the ring-buffer update and the nearest-neighbour lookup.

Both are pure tensor functions (no process group, no module state of their own): the
methods keep their queues as registered buffers, so checkpoints hold them, and gather
what goes in across ranks themselves (MoCo's keys, NNCLR's support set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def ring_enqueue(queue: torch.Tensor, ptr: torch.Tensor, rows: torch.Tensor) -> None:
    """Write ``rows`` over the oldest entries of ``queue`` (a ring buffer), in place.

    Args:
        queue: (K, D) buffer.
        ptr: () int64 buffer, the position of the oldest entry; advanced in place.
        rows: (M, D) new entries; when M > K only the last K are kept.
    """
    size, start = len(queue), int(ptr)
    rows = rows[-size:]
    idx = (start + torch.arange(len(rows), device=queue.device)) % size
    queue[idx] = rows.to(device=queue.device, dtype=queue.dtype)
    ptr.fill_((start + len(rows)) % size)


@torch.no_grad()
def nearest_neighbour(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The row of ``support`` closest to each row of ``z`` by cosine similarity.

    NNCLR (Dwibedi et al., arXiv 2104.14548, sec. 3.2): ``NN(z, Q) = argmin_{q in Q} ||z - q||_2``
    on L2-normalised vectors, which is the ``q`` of largest cosine similarity. Ties go to the
    lowest index (``argmax``). The rows are returned as stored in ``support`` (not normalised
    here), without gradient: the support set is a queue of past projections.

    Args:
        z: (N, D) queries.
        support: (K, D) support set, K >= 1.

    Returns:
        (N, D) ``support[argmax_k cos(z_n, support_k)]``.

    Examples:
        >>> support = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> nearest_neighbour(torch.tensor([[0.1, 5.0]]), support)
        tensor([[0., 2.]])
    """
    if len(support) == 0:
        raise ValueError("nearest_neighbour needs a non-empty support set")
    similarity = F.normalize(z.float(), dim=1) @ F.normalize(support.float(), dim=1).T  # (N, K)
    return support[similarity.argmax(dim=1)]  # (N, D)
