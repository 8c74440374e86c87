"""Batched colour jitter with per-sample factors, using torchvision's definitions.

Brightness multiplies the image; contrast blends it with the mean of its grayscale;
saturation blends it with its grayscale (luma 0.299/0.587/0.114); hue rotates the HSV
hue. The hue shift goes through HSV, as torchvision and PIL do, not a YIQ rotation: one
3x3 matrix per sample would be cheaper, but at the recipes' hue shift of 0.1 turn it
differs from torchvision's result by 0.085 on average and up to 0.39 per channel (on
uniform random pixels), which would change the augmentation the papers tuned. The
closed-form HSV round trip below needs no HSV image.

The four steps run in a random order drawn once per call for the whole batch
(torchvision draws one per image; kornia's ColorJitter, one per batch): per-sample
orders would need all four steps at every position, 4x the work.

Hand-written rather than kornia.enhance's functional equivalents (same formulas),
mostly by clamping in place and fusing blends into addcmul: on 2 CPU cores the whole
jitter is 2.5-3x faster than kornia.augmentation.ColorJitter; per step, brightness and
saturation are 1.2-5x faster, contrast and hue 2.5x at 32 px and at par at 224 px
(benchmarks/augment_ops.py). Contrast and hue are ``@fusable``: compiled inside
``vipr.data.fusion.fused_kernels(True)`` (hue 4.8x faster at 224 px; brightness and
saturation are single in-place passes already, slower compiled).

A sample that is not jittered has neutral factors, which every step leaves bit-identical
(x * 1 + 0; hue by a ``where`` on a zero shift): no blend with the input after the steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vipr.data.augment_ops import coin_flips, luma
from vipr.data.fusion import fusable

_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # factor that leaves the image unchanged: b, c, s multiply, h adds


def _per_sample(factor: Tensor, x: Tensor) -> Tensor:
    """(B,) factors -> (B, 1, 1, 1) on x's device and dtype, to broadcast over an image."""
    return factor.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """clamp(x * f, 0, 1). x: (B, 3, H, W) in [0, 1]; factor: (B,)."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


@fusable
def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """clamp(f * x + (1 - f) * mean(luma(x)), 0, 1), the mean per image. factor: (B,)."""
    f = _per_sample(factor, x)
    mean = luma(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return torch.addcmul(mean * (1.0 - f), x, f).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """clamp(f * x + (1 - f) * luma(x), 0, 1) per pixel. factor: (B,)."""
    f = _per_sample(factor, x)
    return torch.addcmul(luma(x).mul_(1.0 - f), x, f).clamp_(0.0, 1.0)


@fusable
def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Add ``factor`` turns (B,) in [-0.5, 0.5] to the HSV hue; saturation and value are kept.

    Closed form without an HSV image: with v = max(RGB), c = v - min(RGB) and the hue
    h6 in sextants [0, 6), channel n (R=5, G=3, B=1) is v - c * clamp(min(k, 4 - k), 0, 1)
    where k = (n + h6) mod 6. Grey pixels (c = 0) and samples with a zero shift come back
    bit-identical.

    Args:
        x: (B, 3, H, W) in [0, 1].

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    maxc = x.amax(dim=1, keepdim=True)  # (B, 1, H, W), HSV value
    chroma = maxc - x.amin(dim=1, keepdim=True)
    r, g, b = x.split(1, dim=1)
    # Sextant of the maximal channel, ties broken R, G, B as torchvision does.
    is_r, is_g = maxc == r, maxc == g
    numerator = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0)).add_(6.0 * _per_sample(factor, x))
    h6 = torch.addcdiv(offset, numerator, torch.where(chroma > 0, chroma, 1.0))  # shifted hue, sextants
    channel = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = (h6 + channel).remainder_(6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    shifted = torch.addcmul(maxc, chroma, ramp, value=-1.0)
    return torch.where(_per_sample(factor, x) == 0.0, x, shifted)  # a zero shift leaves x bit-identical


_STEPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def adjust_color(x: Tensor, factors: Tensor, order: tuple[int, ...] = (0, 1, 2, 3)) -> Tensor:
    """Apply brightness, contrast, saturation, hue with explicit per-sample factors.

    The batch given goes through each step at once; ``vipr.data.photometric`` hands it
    cache-sized chunks of a large batch (on an AMD EPYC at 224 px: 1.9x faster idle, and
    1.5-1.8x while another process kept both cores busy with matmuls).

    Args:
        x: (B, 3, H, W) float in [0, 1].
        factors: (B, 4) brightness, contrast, saturation (multipliers, 1 = unchanged)
            and hue (turns, 0 = unchanged).
        order: permutation of (0, 1, 2, 3); a step whose factors are all neutral is skipped.

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    for step in order:
        column = factors[:, step]
        if bool((column != _NEUTRAL[step]).any()):
            x = _STEPS[step](x, column)
    return x


def sample_jitter_factors(
    batch: int,
    strengths: tuple[float, float, float, float],
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw torchvision ColorJitter factors per sample, on the CPU.

    Brightness, contrast, saturation ~ U[max(0, 1 - s), 1 + s]; hue ~ U[-s, s] turns.

    Returns:
        factors: (B, 4) float32; neutral for samples that are not jittered.
        apply: (B,) bool, True where the jitter is applied (probability ``p``).
    """
    apply = coin_flips(batch, p, generator)
    lows = [max(0.0, 1.0 - s) for s in strengths[:3]] + [-strengths[3]]
    highs = [1.0 + s for s in strengths[:3]] + [strengths[3]]
    u = torch.rand(batch, 4, generator=generator)
    factors = torch.tensor(lows) + u * (torch.tensor(highs) - torch.tensor(lows))
    factors = torch.where(apply[:, None], factors, torch.tensor(_NEUTRAL))
    return factors, apply


def color_jitter(
    x: Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per sample with probability ``p``, torchvision's ColorJitter with its own factors.

    Args:
        x: (B, 3, H, W) float in [0, 1].
        brightness, contrast, saturation: strength s, factor ~ U[max(0, 1 - s), 1 + s].
        hue: strength in turns, in [0, 0.5]; shift ~ U[-hue, hue].

    Returns:
        (B, 3, H, W); samples that were not drawn are returned bit-identical.
    """
    factors, apply = sample_jitter_factors(x.shape[0], (brightness, contrast, saturation, hue), p, generator)
    return jitter_where(x, factors, apply, tuple(torch.randperm(4, generator=generator).tolist()))


def jitter_where(x: Tensor, factors: Tensor, apply: Tensor, order: tuple[int, ...]) -> Tensor:
    """``adjust_color`` of the samples where ``apply`` (B,) bool is True; the others come back bit-identical
    (their ``factors`` must be neutral, as ``sample_jitter_factors`` draws them)."""
    if not apply.any():
        return x
    return adjust_color(x, factors, order)
