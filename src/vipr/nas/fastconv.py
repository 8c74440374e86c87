"""Faster stride-1 depthwise convolutions on CPU, numerically the same function.

The supernet spends most of a step in the backward pass of depthwise convs (sep_conv and
dil_conv), where PyTorch's CPU kernels are slow, most of all for dilated ones. Measured on the
2-core CPU, one thread, (64, 16, 32, 32) channels-last, backward in ms (native -> here):
3x3 1.8 -> 0.5, 5x5 6.7 -> 5.6, 3x3 dilation 2 6.0 -> ~1, 5x5 dilation 2 10.9 -> ~6.

* input gradient of a stride-1 "same" depthwise conv = the forward conv of the output gradient
  with the spatially flipped kernel (a forward conv is 3-10x faster than the native backward);
* weight gradient = aten.convolution_backward asked for the weight only;
* dilation 2 on even H, W = an undilated conv on the four polyphase sub-images stacked in the
  batch (space-to-batch; DeepLab's trick for atrous convolution, arXiv 1606.00915), so the
  slow dilated kernels are never called; at stride 2 only the even sub-image is read
  ((64, 64, 32, 32), 5x5, forward + backward: 52 -> 10 ms).

``speed_up_depthwise(module)`` swaps every eligible ``nn.Conv2d`` in place (the parameter
object and its state_dict key stay the same); anything else keeps the native op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _DepthwiseSame(torch.autograd.Function):
    """Depthwise conv, stride 1, dilation 1, padding k // 2 (odd k), no bias."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, weight.shape[-1] // 2, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        c, pad = weight.shape[0], weight.shape[-1] // 2
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, pad, 1, c)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], c, [False, True, False])[1]
        return grad_x, grad_w


def _to_phases(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): the four (row, col) parity sub-images, channels-last."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    return nhwc.permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)


def _from_phases(y: Tensor, n: int) -> Tensor:
    """Inverse of _to_phases: (4N, C, H/2, W/2) -> (N, C, H, W), channels-last."""
    _, c, h2, w2 = y.shape
    nhwc = y.permute(0, 2, 3, 1).reshape(2, 2, n, h2, w2, c)
    return nhwc.permute(2, 3, 0, 4, 1, 5).reshape(n, 2 * h2, 2 * w2, c).permute(0, 3, 1, 2)


class FastDepthwiseConv2d(nn.Module):
    """Drop-in for a bias-free, 'same'-padded depthwise nn.Conv2d: stride 1 with dilation 1 or 2,
    or stride 2 with dilation 2."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight  # the same Parameter: optimizers and checkpoints see no change
        self.stride, self.dilation = conv.stride[0], conv.dilation[0]

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv(x, self.weight, self.stride, self.dilation)


def depthwise_conv(x: Tensor, weight: Tensor, stride: int = 1, dilation: int = 1) -> Tensor:
    """Depthwise conv, 'same' padding dilation * (k // 2), no bias; weight (C, 1, k, k), k odd.

    Stride 1 with dilation 1 or 2, and stride 2 with dilation 2, take the fast path; anything else
    is the native conv."""
    k, c = weight.shape[-1], weight.shape[0]
    if stride == 1 and dilation == 1:
        return _DepthwiseSame.apply(x, weight)
    if stride == 2 and dilation == 2:  # reads only the even rows and columns: an undilated conv of those
        return _DepthwiseSame.apply(x[:, :, ::2, ::2], weight)
    if stride == 1 and dilation == 2 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
        return _from_phases(_DepthwiseSame.apply(_to_phases(x), weight), x.shape[0])
    return F.conv2d(x, weight, None, stride, dilation * (k // 2), dilation, c)  # odd side: no exact polyphase split


def eligible(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d or m.bias is not None:
        return False
    k, d = m.kernel_size[0], m.dilation[0]
    return (m.groups == m.in_channels == m.out_channels and m.kernel_size == (k, k) and k % 2 == 1
            and m.dilation == (d, d) and d in (1, 2) and m.stride in ((1, 1), (d, d))
            and m.padding == (d * (k // 2),) * 2
            and m.padding_mode == "zeros")


def speed_up_depthwise(module: nn.Module) -> int:
    """Replace eligible depthwise convs inside ``module`` in place; returns how many."""
    count = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if eligible(child):
                setattr(parent, name, FastDepthwiseConv2d(child))
                count += 1
    return count
