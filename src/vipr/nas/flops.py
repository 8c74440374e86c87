"""Parameters and FLOPs (multiply-adds) of a module at a given input size, and per-op FLOPs tables.

"FLOPs" here follows the NAS papers' tables (DARTS, arXiv 1806.09055; GOLD-NAS, arXiv
2007.03331: "FLOPs" / "Mult-Adds"): the multiply-accumulates of the Conv2d and Linear
layers for ONE image. BatchNorm, ReLU, pooling and additions are not counted (together
under 2% of a DARTS network). Counted with forward hooks, so any module, branchy or
not, is measured by running it once in eval mode on a zero image. ``torch.utils.flop_counter``
gives 2x these numbers for convs (it counts a multiply-add as two FLOPs); the tests check
both against hand computation.

Examples:
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    >>> count_flops(net, 32)  # 32*32*8*3*9 + 8192*10
    303104
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vipr.nas.ops import create_op

EXCLUDED_FROM_PARAMS = ("aux_head",)  # DARTS reports parameters without the auxiliary tower


def count_params(module: nn.Module, exclude: Iterable[str] = EXCLUDED_FROM_PARAMS) -> int:
    """Trainable parameters whose name has no part in ``exclude``."""
    skip = tuple(exclude)
    return sum(p.numel() for name, p in module.named_parameters()
               if p.requires_grad and not any(part in skip for part in name.split(".")))


def _layer_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one Conv2d / Linear call, per sample."""
    per_sample = output[0].numel()  # output elements of one sample
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return per_sample * (layer.in_channels // layer.groups) * kh * kw
    return per_sample * layer.in_features


@torch.no_grad()
def count_flops(module: nn.Module, image_size: int | tuple[int, int], in_channels: int = 3) -> int:
    """Conv2d + Linear multiply-adds of one forward pass of one image (eval mode; the mode is restored).

    Args:
        image_size: input side (or (H, W)) in pixels.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.zeros(1, in_channels, h, w)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    total = [0]

    def hook(layer, args, output):
        total[0] += _layer_macs(layer, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    try:
        module.eval()
        module(x.to(device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return total[0]


def op_flops(op: str, channels: int, side: int, stride: int = 1) -> int:
    """Multiply-adds of op ``op`` on one (channels, side, side) map (``stride`` 2: a reduction edge)."""
    return count_flops(create_op(op, channels, stride), side, in_channels=channels)


def op_flops_table(ops: Iterable[str], channels: int, side: int, stride: int = 1) -> dict[str, int]:
    """``{op: multiply-adds}`` at one width and map size: the per-op cost of GOLD-NAS's penalty."""
    return {op: op_flops(op, channels, side, stride) for op in ops}
