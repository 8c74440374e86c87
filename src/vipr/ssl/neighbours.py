"""The neighbour engine: support-set queues, nearest-neighbour lookup, and neighbour tables.

``ring_enqueue`` and ``nearest_neighbour`` are pure tensor functions: methods keep their
queues as registered buffers, so checkpoints hold them, and gather what goes in across ranks
themselves (MoCo's keys, NNCLR's support set). ``NeighbourTable`` keeps, for every train image,
its nearest neighbours in a feature bank of the whole split (:mod:`vipr.ssl.bank`), refreshed
every few epochs, with the rule that picks positives among them (CLIM, CsMl, SCAN).
"""

from __future__ import annotations

import importlib.util
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vipr.engine.device import precision_autocast
from vipr.errors import ConfigError
from vipr.ssl.bank import compute_bank, knn_indices


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


# A selection rule: (bank features (N, D), neighbour indices (N, k), labels (N,)) -> (N, k) bool candidates.
SelectFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class NeighbourTable(nn.Module):
    """Each train image's k nearest neighbours in a feature bank, refreshed on a schedule.

    The bank holds L2-normalised pooled features of the centre view of every train image from
    ``encoder`` (the key / momentum encoder for CLIM and CsMl), computed in chunks and, under DDP,
    sharded and all-gathered (:func:`vipr.ssl.bank.compute_bank`). The first refresh happens at
    epoch ``start_epoch`` (methods train plain MoCo before it), then every ``refresh_every``
    epochs. A ``select`` rule marks which neighbours may be an anchor's positive (CLIM: centre-wise
    selection; SCAN: same label; CsMl: all). The table, the mask, the epoch of the last refresh
    and (``keep_bank``) the bank itself, in float16, are the module's extra state: checkpoints
    restore them and a resumed run draws the same positives without recomputing the bank. The
    bank adds N x D x 2 bytes to a checkpoint (CIFAR-10 with ResNet-18: 51 MB; ImageNet with
    ResNet-50: 5.2 GB, where ``keep_bank=False`` leaves it out).
    """

    def __init__(self, k: int, refresh_every: int, start_epoch: int = 0, select: SelectFn | None = None,
                 use_faiss: str = "auto", keep_bank: bool = True):
        super().__init__()
        if k < 1 or refresh_every < 1 or start_epoch < 0:
            raise ConfigError(f"neighbours need k >= 1, refresh_every >= 1 and start epoch >= 0; got k={k}, "
                              f"refresh_every={refresh_every}, start_epoch={start_epoch}")
        self.k, self.refresh_every, self.start_epoch = k, refresh_every, start_epoch
        self.select, self.use_faiss, self.keep_bank = select, use_faiss, keep_bank
        self.features: torch.Tensor | None = None  # (N, D) float16 on the CPU: the bank, if kept
        self.indices: torch.Tensor | None = None  # (N, k) int64, most similar first
        self.candidates: torch.Tensor | None = None  # (N, k) bool
        self.bank_epoch = -1  # epoch of the last refresh

    @property
    def ready(self) -> bool:
        return self.indices is not None

    def due(self, epoch: int) -> bool:
        """Whether the table is older than the last refresh scheduled at or before ``epoch``."""
        if epoch < self.start_epoch:
            return False
        scheduled = self.start_epoch + (epoch - self.start_epoch) // self.refresh_every * self.refresh_every
        return self.bank_epoch < scheduled

    @torch.no_grad()
    def refresh(self, epoch: int, encoder, images, labels, *, image_size: int, device, progress: bool) -> dict:
        """Recompute bank, neighbours and candidates; returns ``{"bank_seconds": s, "positive_rate": r}``."""
        bank = compute_bank(encoder, images, image_size=image_size, device=device, progress=progress)
        start = time.perf_counter()
        k = min(self.k, len(images) - 1)
        self.indices = knn_indices(bank.features, bank.features, k, exclude_self=True,
                                   use_faiss=_faiss_wanted(self.use_faiss, bank.features)).cpu()
        labels = torch.as_tensor(labels, dtype=torch.long)
        mask = torch.ones_like(self.indices, dtype=torch.bool)
        if self.select is not None:
            mask = self.select(bank.features.cpu(), self.indices, labels)
        self.candidates, self.bank_epoch = mask, epoch
        self.features = bank.features.to("cpu", torch.float16) if self.keep_bank else None
        seconds = bank.seconds + time.perf_counter() - start
        return {"bank_seconds": seconds, "positive_rate": float(mask.any(1).float().mean())}

    def draw(self, anchors: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One candidate neighbour per anchor, uniformly; ``(positives (B,), found (B,) bool)``.

        An anchor without a candidate (or before the first refresh) gets itself, ``found=False``.
        """
        anchors_cpu = anchors.cpu()
        if not self.ready:
            return anchors, torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)
        mask = self.candidates[anchors_cpu].float()  # (B, k)
        found = mask.sum(1) > 0
        weights = torch.where(found[:, None], mask, torch.ones_like(mask))
        column = torch.multinomial(weights, 1, generator=generator)[:, 0]  # (B,)
        chosen = self.indices[anchors_cpu, column]
        positives = torch.where(found, chosen, anchors_cpu)
        return positives.to(anchors.device), found.to(anchors.device)

    def get_extra_state(self) -> dict:
        return {"indices": self.indices, "candidates": self.candidates, "bank_epoch": self.bank_epoch,
                "features": self.features}

    def set_extra_state(self, state: dict) -> None:
        self.indices, self.candidates, self.bank_epoch = state["indices"], state["candidates"], state["bank_epoch"]
        self.features = state.get("features")  # absent in checkpoints written before the bank was kept


def _faiss_wanted(setting: str, features: torch.Tensor) -> bool:
    """``auto``: faiss when it is installed and the bank is on the CPU (same results, see knn_indices)."""
    if setting not in ("auto", "yes", "no"):
        raise ConfigError(f"use_faiss must be auto, yes or no; got {setting!r}")
    if setting != "auto":
        return setting == "yes"
    return features.device.type == "cpu" and importlib.util.find_spec("faiss") is not None


def refresh_if_due(table: NeighbourTable, epoch: int, backbone: nn.Module, data) -> dict:
    """Refresh ``table`` from ``backbone``'s pooled features when due; the method's ``on_epoch_start``.

    ``data`` is the method's :class:`vipr.data.train_data.TrainData` (None when a method runs
    outside the trainer: nothing to do). Returns the refresh's stats for the progress bar and log.
    """
    if data is None or not table.due(epoch):
        return {}
    with precision_autocast(data.device, data.precision):
        return table.refresh(epoch, backbone.forward_features, data.images, data.labels,
                             image_size=data.image_size, device=data.device, progress=data.progress)
