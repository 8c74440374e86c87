"""Batched geometric and filtering augmentations with per-sample random parameters.

Every op takes a float batch ``x`` of shape (B, 3, H, W) with values in [0, 1] on any
device and returns the result on the same device; no op writes into ``x`` (one with no
sample selected may return ``x`` itself). Random parameters are small
tensors drawn on the CPU from ``generator`` and then moved to ``x.device``, so a seed
gives the same augmentation on CPU and GPU (DESIGN.md, principle 1). Whether a sample
is augmented is decided per sample with probability ``p``; a skipped sample comes back
bit-identical. Colour jitter lives in :mod:`vipr.data.augment_color`.

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 3, 40, 40)
    >>> random_resized_crop(x, 32, generator=g).shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.data.fusion import fusable

# ITU-R 601-2 luma weights, as PIL's "L" mode and kornia's rgb_to_grayscale use them.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) ITU-R 601-2 luma; 1.3-1.6x faster than kornia's rgb_to_grayscale."""
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = LUMA_WEIGHTS
    return r.mul(wr).add_(g, alpha=wg).add_(b, alpha=wb).unsqueeze(1)


def coin_flips(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    """(n,) bool on the CPU, each True with probability ``p``; the caller moves it if needed."""
    return torch.rand(n, generator=generator) < p


def as_float_image(x: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float32 in [0, 1]; float input is returned as is."""
    return x if x.is_floating_point() else x.to(torch.float32).mul_(1.0 / 255.0)


@fusable
def flipped_float_image(x: Tensor, flip: Tensor) -> Tensor:
    """``as_float_image(x)`` with the samples where ``flip`` (B, 1, 1, 1) bool is True mirrored left-right."""
    x = as_float_image(x)
    return torch.where(flip, x.flip(-1), x)


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """Draw one crop box per sample as torchvision's ``RandomResizedCrop.get_params`` does.

    Each sample gets ``attempts`` candidate (area fraction, log aspect ratio) pairs; the
    first whose rounded box fits the image wins, with a uniform integer offset. A sample
    with no fitting candidate gets torchvision's fallback: the largest centred box whose
    aspect ratio is clamped into ``ratio``.

    Returns:
        (B, 4) int64 on the CPU: top, left, box height, box width in pixels.
    """
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    area = height * width * torch.empty(batch, attempts, dtype=torch.float64).uniform_(*scale, generator=generator)
    aspect = torch.empty(batch, attempts, dtype=torch.float64).uniform_(log_lo, log_hi, generator=generator).exp()
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first True, like the loop's break
    found = fits.any(dim=1)
    fallback_h, fallback_w = _fallback_box(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), fallback_h)
    w = torch.where(found, w.gather(1, first).squeeze(1), fallback_w)
    u = torch.rand(batch, 2, dtype=torch.float64, generator=generator)
    top = torch.where(found, (u[:, 0] * (height - h + 1)).floor().long(), (height - h) // 2)
    left = torch.where(found, (u[:, 1] * (width - w + 1)).floor().long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's centre-crop fallback size (h, w) when no random attempt fits."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor) -> Tensor:
    """Resample one box per sample to ``size`` x ``size`` pixels in a single ``grid_sample``.

    Chosen over ``torchvision.ops.roi_align`` and kornia's crops by benchmarks/augment_ops.py
    (2 CPU cores: 5x faster at 32 px, 1.8-3x at 224 px).

    Bilinear with ``align_corners=False`` pixel centres, so a full-image box equals
    ``F.interpolate(x, size, mode="bilinear")``. The horizontal flip is a sign in the
    sampling grid, so it costs nothing. No antialiasing: crops shrink by at most
    ~1.15x for a 256 px store cropped to 224 px, where aliasing is negligible. Where a
    box is upscaled, its outermost output row/column samples up to half a pixel outside
    the box and reads the real neighbouring pixels; torchvision's crop-then-resize
    clamps to the box edge there. Everything else equals crop-then-resize.

    Args:
        x: (B, C, H, W) float.
        boxes: (B, 4) int top, left, height, width in pixels (CPU).
        size: output side S in pixels.
        flip: (B,) bool (CPU), True mirrors that sample left-right.

    Returns:
        (B, C, S, S) float on ``x.device``.
    """
    batch, _, height, width = x.shape
    gx, gy = _crop_grid_axes(boxes, flip, height, width, size)
    gx = gx.to(device=x.device, dtype=x.dtype)[:, None, :].expand(batch, size, size)
    gy = gy.to(device=x.device, dtype=x.dtype)[:, :, None].expand(batch, size, size)
    # The grid is an axis-aligned affine map, so it is built from two (B, S) vectors:
    # F.affine_grid's (B, S*S, 3) @ (B, 3, 2) product was slower than the whole resampling.
    grid = torch.stack([gx, gy], dim=-1)  # (B, S, S, 2) as (x, y) in [-1, 1]
    # "border" clamps the half-pixel overhang of upscaled edge boxes, as F.interpolate does.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_grid_axes(boxes: Tensor, flip: Tensor, height: int, width: int, size: int) -> tuple[Tensor, Tensor]:
    """Normalised sampling positions (B, S) along x and y for each box's S output pixel centres.

    Output centre u = (2i + 1) / S - 1 maps to input x = sign * (w / W) * u + (2 * left + w) / W - 1
    (align_corners=False convention); sign = -1 flips. Computed in float64 on the CPU.
    """
    top, left, h, w = boxes.to(torch.float64).unbind(dim=1)
    centres = (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1  # (S,)
    sign = 1.0 - 2.0 * flip.to(torch.float64)
    gx = (sign * w / width)[:, None] * centres + ((2 * left + w) / width - 1)[:, None]
    gy = (h / height)[:, None] * centres + ((2 * top + h) / height - 1)[:, None]
    return gx, gy


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample random resized crop plus horizontal flip (torchvision's RandomResizedCrop).

    Args:
        x: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1].
        size: output side S in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        flip_p: probability of a left-right flip, per sample.
        generator: CPU generator for the crop boxes and flips.

    Returns:
        (B, 3, S, S) float32 in [0, 1] on ``x.device``.
    """
    batch, _, height, width = x.shape
    boxes = sample_crop_boxes(batch, height, width, scale, ratio, generator)
    flip = coin_flips(batch, flip_p, generator)
    return resized_crop(as_float_image(x), boxes, size, flip)


def random_grayscale(x: Tensor, p: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
    """Per sample with probability ``p``, replace RGB by its ITU-R 601-2 luma on all 3 channels.

    Args:
        x: (B, 3, H, W) float in [0, 1].

    Returns:
        (B, 3, H, W), luma = 0.299 R + 0.587 G + 0.114 B where applied, ``x`` elsewhere.
    """
    return grayscale_where(x, coin_flips(x.shape[0], p, generator))


def grayscale_where(x: Tensor, apply: Tensor) -> Tensor:
    """Luma on all 3 channels of the samples where ``apply`` (B,) bool is True, ``x`` elsewhere."""
    if not apply.any():
        return x
    return _gray_where(x, apply.to(x.device).view(-1, 1, 1, 1))


@fusable
def _gray_where(x: Tensor, apply: Tensor) -> Tensor:
    return torch.where(apply, luma(x), x)  # (B, 1, H, W) luma broadcast over the channels


def blur_kernel_size(image_side: int) -> int:
    """Odd Gaussian kernel size of about 10% of the image side (SimCLR's choice), at least 3."""
    k = max(3, int(0.1 * image_side))
    return k if k % 2 == 1 else k + 1


def blur_with_sigma(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur with one sigma per sample, reflect padding, as torchvision's gaussian_blur.

    kornia's separable ``gaussian_blur2d`` with a (N, 2) sigma runs one grouped
    convolution per axis with each sample's own 1-D kernel; it is as fast as the
    hand-written grouped convolution in benchmarks/augment_ops.py, so it is used as is.

    Args:
        x: (N, C, H, W) float.
        sigma: (N,) standard deviations in pixels.
        kernel_size: odd kernel side k in pixels, k // 2 < min(H, W).

    Returns:
        (N, C, H, W) blurred.
    """
    sigma = sigma.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, 2)
    return kornia.filters.gaussian_blur2d(x, (kernel_size, kernel_size), sigma, border_type="reflect")


def gaussian_blur(
    x: Tensor,
    sigma_range: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    generator: torch.Generator | None = None,
    kernel_size: int | None = None,
) -> Tensor:
    """Per sample with probability ``p``, blur with sigma ~ U(sigma_range) pixels.

    Only the selected samples are blurred (index_select / index_copy), so p=0.1 costs
    about a tenth of p=1. The selection is decided on the CPU: no device sync.

    Args:
        x: (B, 3, H, W) float.
        kernel_size: odd side in pixels; default ``blur_kernel_size(min(H, W))``.

    Returns:
        (B, 3, H, W).
    """
    batch = x.shape[0]
    apply = coin_flips(batch, p, generator)
    sigma = torch.empty(batch).uniform_(*sigma_range, generator=generator)
    return blur_where(x, apply, sigma, kernel_size)


def blur_where(x: Tensor, apply: Tensor, sigma: Tensor, kernel_size: int | None = None) -> Tensor:
    """Blur the samples where ``apply`` (B,) bool is True with their ``sigma`` (B,) pixels; see gaussian_blur."""
    index = apply.nonzero().squeeze(1)
    if index.numel() == 0:
        return x
    k = kernel_size or blur_kernel_size(min(x.shape[-2:]))
    index_dev = index.to(x.device)
    blurred = blur_with_sigma(x.index_select(0, index_dev), sigma[index], k)
    return x.index_copy(0, index_dev, blurred)


def solarize(x: Tensor, threshold: float = 0.5, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Per sample with probability ``p``, invert pixels at or above ``threshold``: where(x >= t, 1 - x, x).

    Skipped samples get an infinite threshold, so one ``where`` (kornia's solarize, as fast
    as a hand-written one) covers the whole batch.

    Args:
        x: (B, 3, H, W) float in [0, 1].

    Returns:
        (B, 3, H, W).
    """
    return solarize_where(x, coin_flips(x.shape[0], p, generator), threshold)


def solarize_where(x: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Solarize the samples where ``apply`` (B,) bool is True; see solarize."""
    if not apply.any():
        return x
    thresholds = torch.full(apply.shape, math.inf).masked_fill_(apply, threshold)
    return kornia.enhance.solarize(x, thresholds.to(device=x.device, dtype=x.dtype))


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel (hand-written: 1.25x faster than kornia.enhance.normalize).

    Args:
        x: (B, C, H, W) float; mean, std: C floats each.

    Returns:
        (B, C, H, W), same memory format as ``x``.
    """
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t).mul_(inv_std)


@fusable
def normalize_into(out: Tensor, x: Tensor, mean: Tensor, inv_std: Tensor) -> Tensor:
    """``out.copy_((x - mean) * inv_std)``: :func:`normalize` written straight into ``out`` (in the fused
    kernel, one pass). ``mean``, ``inv_std``: (1, C, 1, 1) on x's device and dtype."""
    return out.copy_((x - mean).mul_(inv_std))
