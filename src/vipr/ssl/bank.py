"""Feature banks of a whole split and exact nearest neighbours in them (HSA/CsMl, CLIM).

HSA recomputes, every few epochs, L2-normalised features of centre views of the whole train set
with the key encoder and keeps each image's top-5 exact neighbours; CLIM clusters the same kind
of bank (see :mod:`vipr.ssl.clusters`). Both need: one pass over the split without gradient,
sharded over ranks and reassembled in index order (:func:`compute_bank`), and a chunked exact
cosine kNN (:func:`knn_indices`), optionally through ``faiss`` (the ``faiss`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.embedding import cosine_topk, encode_split
from vipr.engine.distributed import gather, is_main, rank, world_size
from vipr.engine.progress import side_bar


@dataclass(frozen=True)
class Bank:
    """A split's features and what they cost.

    Attributes:
        features: (N, D) float32, L2-normalised rows, row ``i`` is image ``i`` of the split.
        seconds: wall-clock seconds to compute and assemble it (log it: it is per-refresh cost).
    """

    features: Tensor
    seconds: float


@torch.no_grad()
def compute_bank(
    encoder: Callable[[Tensor], Tensor],
    split_images: np.ndarray,
    *,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Bank:
    """L2-normalised features of the centre (``eval_transform``) view of every image of a split.

    No gradient; putting ``encoder`` in eval mode is the caller's business. Under DDP rank ``r``
    encodes images ``r::world_size``; the shards are padded to equal length, gathered and
    interleaved back, so every rank returns the full bank in the split's index order.

    Args:
        encoder: (B, 3, S, S) float images -> (B, D) features.
        split_images: (N, 3, H, W) uint8 array (a memory map is fine; read in strided slices).
        image_size: S, the side the images are resized to, in pixels.
        mean, std: per-channel normalisation of ``eval_transform``.
        batch_size: images per forward pass on each rank.
        device: where the images are encoded and the bank is kept.
        progress: a bar on stderr on a terminal, else a line if the pass is long (main rank only).

    Returns:
        ``Bank(features (N, D) float32 on device, seconds)``.
    """
    start = time.perf_counter()
    n, ranks, me = len(split_images), world_size(), rank()
    if n < ranks:
        raise ValueError(f"compute_bank needs at least one image per rank; got {n} images for {ranks} ranks")
    local = _encode_shard(encoder, split_images, me, ranks, image_size=image_size, mean=mean, std=std,
                          batch_size=batch_size, device=torch.device(device), progress=progress and is_main())
    per_rank = -(-n // ranks)  # ceil: rank r holds ceil((n - r) / ranks) <= per_rank rows
    padded = torch.cat([local, local.new_zeros(per_rank - len(local), local.shape[1])])  # (per_rank, D)
    gathered = gather(padded).view(ranks, per_rank, -1)  # [r, j] is image j * ranks + r
    features = gathered.transpose(0, 1).reshape(ranks * per_rank, -1)[:n]  # (N, D); padding is the tail
    if features.is_cuda:
        torch.cuda.synchronize(features.device)  # time the work, not its launch
    return Bank(features, time.perf_counter() - start)


def _encode_shard(encoder, images: np.ndarray, me: int, ranks: int, *, image_size: int, mean, std,
                  batch_size: int, device: torch.device, progress: bool) -> Tensor:
    """Normalised features (ceil((N - me) / ranks), D) float32 of images ``me::ranks``."""
    count = len(range(me, len(images), ranks))
    blocks = (slice(me + first * ranks, me + (min(first + batch_size, count) - 1) * ranks + 1, ranks)
              for first in range(0, count, batch_size))  # basic slices: no index array
    with side_bar(total=count, desc="feature bank", unit="img", leave=False, enabled=progress) as bar:
        parts = encode_split(encoder, images, blocks, image_size=image_size, mean=mean, std=std, device=device,
                             normalize=True, on_block=bar.update)  # (B, D) each
    return torch.cat(parts)


@torch.no_grad()
def knn_indices(
    queries: Tensor,
    bank: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int = 4096,
    use_faiss: bool = False,
) -> Tensor:
    """Exact cosine k-nearest neighbours of each query in the bank, most similar first.

    Both inputs are expected L2-normalised (as :func:`compute_bank` returns), so the inner product
    is the cosine similarity. With ``exclude_self`` the queries are bank rows ``0..M-1`` and row
    ``i`` is never its own neighbour (HSA keeps the top-5 *other* images). Memory is
    ``chunk_size x N`` similarities. ``use_faiss`` searches a ``faiss.IndexFlatIP`` on CPU instead
    (same exact search; among equal similarities the order may differ).

    Args:
        queries: (M, D) float.
        bank: (N, D) float, same device.
        k: neighbours per query, ``k <= N`` (``k <= N - 1`` with ``exclude_self``).
        exclude_self: queries are ``bank[:M]``; drop each one's own index.
        chunk_size: query rows per similarity matmul.
        use_faiss: use faiss (``pip install 'vipr[faiss]'``); ImportError if it is missing.

    Returns:
        (M, k) int64 indices into ``bank``, on ``queries.device``.

    Examples:
        >>> bank = torch.eye(3)
        >>> knn_indices(bank, bank, 1, exclude_self=True).shape
        torch.Size([3, 1])
    """
    m, n = len(queries), len(bank)
    if not 1 <= k <= n - int(exclude_self):
        raise ValueError(f"k must be in 1..{n - int(exclude_self)} for a bank of {n} rows "
                         f"(exclude_self={exclude_self}); got k={k}")
    if exclude_self and m > n:
        raise ValueError(f"exclude_self means the queries are bank rows 0..M-1, but M={m} > N={n}")
    if use_faiss:
        return _faiss_knn(queries, bank, k, exclude_self).to(queries.device)
    return cosine_topk(queries, bank, k, chunk_size=chunk_size, exclude_self=exclude_self)[1]


def _faiss_knn(queries: Tensor, bank: Tensor, k: int, exclude_self: bool) -> Tensor:
    """(M, k) int64 CPU indices from a flat inner-product faiss index."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError("use_faiss=True needs faiss: pip install 'vipr[faiss]' (faiss-cpu), "
                          "or pass use_faiss=False for the torch search") from e
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(np.ascontiguousarray(bank.detach().float().cpu().numpy()))
    _, found = index.search(np.ascontiguousarray(queries.detach().float().cpu().numpy()), k + int(exclude_self))
    found = torch.from_numpy(found).long()  # (M, k [+1])
    if not exclude_self:
        return found
    drop = found == torch.arange(len(found))[:, None]  # (M, k+1): the query itself
    drop[~drop.any(1), -1] = True  # self tied out of the top k+1: drop the last instead
    return found[~drop].view(len(found), k)
