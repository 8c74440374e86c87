"""DARTS' training augmentation for the evaluation network, batched on the training device.

DARTS (arXiv 1806.09055), ``utils._data_transforms_cifar10``: random crop with 4 px zero
padding, horizontal flip, normalisation, then Cutout (DeVries & Taylor, arXiv 1708.04552):
one 16 px square per image, its centre uniform over the image (the square is clipped at
the border), zeroed after normalisation. Padding and cutout scale with the image side
(4 and 16 px at 32 px). All random numbers come from one CPU generator, so a seed gives
the same batch on any device (DESIGN.md, principle 1).

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = darts_train_view(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), 32, cutout_px=16, generator=g)
    >>> x.shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.data.augment_ops import as_float_image, normalize

PAD_AT_32 = 4  # px of zero padding before the random crop, at a 32 px image
CUTOUT_AT_32 = 16  # px side of the cutout square, at a 32 px image


def scaled_px(px_at_32: int, image_size: int) -> int:
    """A pixel length given for 32 px images, at ``image_size`` (at least 1)."""
    return max(1, round(px_at_32 * image_size / 32))


def pad_crop_flip(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``pad`` px, crop back to the original side at a random offset, flip half (per sample).

    Args:
        x: (B, C, S, S) float.
    """
    b, _, s, _ = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, S + 2 pad, S + 2 pad)
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)  # (2, B): rows, columns
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    grid = torch.arange(s, device=x.device)
    rows = offsets[0][:, None] + grid  # (B, S)
    cols = torch.where(flip[:, None], grid.flip(0), grid) + offsets[1][:, None]  # (B, S)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero one ``size`` x ``size`` square per sample, centred uniformly in the image, clipped at the border.

    Args:
        x: (B, C, H, W) float.
    """
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator).to(x.device)
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ys[None] >= (cy - size // 2)[:, None]) & (ys[None] < (cy + size - size // 2)[:, None])  # (B, H)
    in_x = (xs[None] >= (cx - size // 2)[:, None]) & (xs[None] < (cx + size - size // 2)[:, None])  # (B, W)
    hole = in_y[:, :, None] & in_x[:, None, :]  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def darts_train_view(images_uint8: Tensor, image_size: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, cutout_px: int = 0,
                     generator: torch.Generator | None = None) -> Tensor:
    """Resize (if needed), pad-crop, flip, normalise, cutout: (B, 3, H, W) uint8 -> (B, 3, S, S) float, channels-last."""
    x = as_float_image(images_uint8)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    x = normalize(pad_crop_flip(x, scaled_px(PAD_AT_32, image_size), generator), mean, std)
    if cutout_px > 0:
        x = cutout(x, cutout_px, generator)
    return x.contiguous(memory_format=torch.channels_last)
