"""CutMix for contrastive methods: per-sample boxes, the mixed batch, and the area weights.

CutMix (Yun et al., arXiv 1905.04899, eq. 2): a box of relative area ``1 - lambda`` is cut from
one image and pasted into another; the label (here: the positive's weight) follows the area.
CLIM (arXiv 2011.02697) pastes a neighbour positive into the anchor's query view with
``lambda ~ Beta(a, a)``; CsMl (arXiv 2012.02733) does the same with ``Beta(2, 2)``. Boxes are
drawn per sample; where a box is clipped at the border, the weight is its actual area.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def draw_beta(n: int, alpha: float, generator: torch.Generator) -> Tensor:
    """(n,) float32 lambdas ~ Beta(alpha, alpha), reproducible from a torch CPU generator."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, n).astype(np.float32))


def cutmix_boxes(lam: Tensor, height: int, width: int, generator: torch.Generator) -> Tensor:
    """One box per sample covering about ``1 - lam`` of the image, centre uniform, clipped at the border.

    Args:
        lam: (B,) in [0, 1], the share of the base image that should remain.
        height, width: image size in pixels.
        generator: CPU generator for the box centres.

    Returns:
        (B, 4) int64 boxes ``(top, bottom, left, right)``, half-open: rows top..bottom-1.
    """
    cut = torch.sqrt(1 - lam.clamp(0, 1))  # (B,) side ratio: area ratio (1 - lam)
    box_h, box_w = (cut * height).round().long(), (cut * width).round().long()
    centre_y = torch.randint(height, lam.shape, generator=generator)
    centre_x = torch.randint(width, lam.shape, generator=generator)
    top, bottom = (centre_y - box_h // 2).clamp(0, height), (centre_y - box_h // 2 + box_h).clamp(0, height)
    left, right = (centre_x - box_w // 2).clamp(0, width), (centre_x - box_w // 2 + box_w).clamp(0, width)
    return torch.stack([top, bottom, left, right], dim=1)


def box_masks(boxes: Tensor, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """(B, 1, H, W) bool, True inside each sample's box."""
    boxes = boxes.to(device)
    rows = torch.arange(height, device=device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(width, device=device)[None, None, :]  # (1, 1, W)
    top, bottom, left, right = (boxes[:, i, None, None] for i in range(4))  # (B, 1, 1) each
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (B, H, W)
    return inside[:, None]


def cutmix(base: Tensor, patch: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Paste ``patch`` into ``base`` inside ``boxes``; returns ``(mixed, base_weight)``.

    Args:
        base: (B, C, H, W) images that keep the area outside the boxes (the anchors).
        patch: (B, C, H, W) images pasted inside the boxes (the positives).
        boxes: (B, 4) from :func:`cutmix_boxes` at this H, W.

    Returns:
        ``mixed`` (B, C, H, W) in ``base``'s memory format, and (B,) float32 ``base_weight``:
        the fraction of pixels from ``base``, ``1 - box area / (H * W)``.
    """
    height, width = base.shape[-2:]
    masks = box_masks(boxes, height, width, base.device)
    mixed = torch.where(masks, patch, base)
    area = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).float()
    return mixed, (1 - area / (height * width)).to(base.device)
