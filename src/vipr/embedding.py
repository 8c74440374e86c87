"""Images to features, features to neighbours: the one split encoder and the one chunked cosine top-k.

Training's feature banks (:mod:`vipr.ssl.bank`: HSA, CLIM, SCAN) and evaluation
(:mod:`vipr.eval.features`, :mod:`vipr.eval.knn`) both encode a whole split of uint8 images
with the evaluation preprocessing and both look up the most similar rows of a bank; each does
it through these two functions, so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.data.augment import eval_transform
from vipr.engine.device import precision_autocast

Block = slice | np.ndarray  # rows of a split: a basic slice (one read of a memmap) or an index array


@torch.no_grad()
def encode_split(encoder: Callable[[Tensor], Tensor], images: np.ndarray, blocks: Iterable[Block], *,
                 image_size: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 precision: str = "fp32", normalize: bool = False, out_device: torch.device | str | None = None,
                 on_block: Callable[[int], object] | None = None) -> list[Tensor]:
    """Features of ``images[block]`` for each block, centre view (``eval_transform``), no gradient.

    Args:
        encoder: (B, 3, S, S) float images -> (B, D) features.
        images: (N, 3, H, W) uint8 array (a memory map is fine: each block is copied once).
        blocks: the rows to encode, batch by batch, in order.
        image_size: S, in pixels; mean, std: per-channel normalisation.
        device: where images are encoded; precision: a resolved autocast precision (bf16 | fp16 | fp32).
        normalize: L2-normalise each feature row (a cosine bank).
        out_device: where each block's features are put (None: ``device``).
        on_block: called with each block's row count (a progress bar's ``update``).

    Returns:
        one (B, D) float32 tensor per block.
    """
    parts = []
    for block in blocks:
        batch = torch.from_numpy(_read_block(images, block)).to(device, non_blocking=True)  # (B, 3, H, W) uint8
        x = eval_transform(batch, image_size, mean, std)  # (B, 3, S, S)
        with precision_autocast(device, precision):
            features = encoder(x).float()  # (B, D)
        if normalize:
            features = F.normalize(features, dim=1)
        parts.append(features if out_device is None else features.to(out_device))
        if on_block is not None:
            on_block(len(batch))
    return parts


def _read_block(images: np.ndarray, block: Block) -> np.ndarray:
    # A writable copy, as torch.from_numpy wants (memmaps are read-only): a slice reads one contiguous
    # block of a memmap and is copied; fancy indexing gathers row by row into a fresh array already.
    return np.array(images[block]) if isinstance(block, slice) else np.ascontiguousarray(images[block])


@torch.no_grad()
def cosine_topk(queries: Tensor, bank: Tensor, k: int, *, chunk_size: int, exclude_self: bool = False,
                normalize: bool = False) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``bank`` most similar to each query (inner product), chunk by chunk.

    Memory is ``chunk_size x N`` similarities. With ``normalize`` both sides are L2-normalised
    first (then the inner product is the cosine); with ``exclude_self`` the queries are
    ``bank[:M]`` and row ``i`` is never its own neighbour.

    Args:
        queries: (M, D) float; bank: (N, D) float on the same device; k <= N (N - 1 with exclude_self).

    Returns:
        similarities (M, k) float32 and indices (M, k) int64 into ``bank``, most similar first.
    """
    bank = bank.float()
    if normalize:
        bank = F.normalize(bank, dim=1)
    values, indices = [], []
    for first in range(0, len(queries), chunk_size):
        chunk = queries[first:first + chunk_size].float()
        sim = (F.normalize(chunk, dim=1) if normalize else chunk) @ bank.T  # (B, N)
        if exclude_self:
            rows = torch.arange(len(sim), device=sim.device)
            sim[rows, first + rows] = -float("inf")
        top = sim.topk(k, dim=1)  # (B, k) each
        values.append(top.values)
        indices.append(top.indices)
    if not values:
        empty = torch.zeros(0, k, device=queries.device)
        return empty, empty.long()
    return torch.cat(values), torch.cat(indices)
