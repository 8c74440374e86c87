"""vipr.nas.fastconv: the fast depthwise paths against PyTorch's native convolution."""

import pytest
import torch
import torch.nn.functional as F

from vipr.nas.fastconv import FastDepthwiseConv2d, depthwise_conv, eligible, speed_up_depthwise

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, 2), (2, 2), (2, 1)])
@pytest.mark.parametrize("size", [8, 7])  # odd sides take the native fallback where no exact split exists
def test_depthwise_conv_matches_native_forward_and_gradients(k, stride, dilation, size):
    torch.manual_seed(0)
    x = torch.randn(3, 6, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(6, 1, k, k, requires_grad=True)
    pad = dilation * (k // 2)
    native = F.conv2d(x, w, None, stride, pad, dilation, 6)
    fast = depthwise_conv(x, w, stride, dilation)
    assert fast.shape == native.shape
    assert torch.allclose(fast, native, atol=1e-5)
    g = torch.randn_like(native)
    want = torch.autograd.grad(native, (x, w), g)
    got = torch.autograd.grad(fast, (x, w), g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4)


def test_speed_up_swaps_only_eligible_convs_and_keeps_parameters():
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False),  # yes
        torch.nn.Conv2d(4, 4, 5, 2, 4, dilation=2, groups=4, bias=False),  # yes: stride 2, dilation 2
        torch.nn.Conv2d(4, 4, 3, 2, 1, groups=4, bias=False),  # no: stride 2, dilation 1 (native is fast)
        torch.nn.Conv2d(4, 8, 1, bias=False),  # no: not depthwise
    )
    before = [id(p) for p in convs.parameters()]
    assert [eligible(m) for m in convs] == [True, True, False, False]
    assert speed_up_depthwise(convs) == 2
    assert isinstance(convs[1], FastDepthwiseConv2d) and convs[1].stride == 2
    assert [id(p) for p in convs.parameters()] == before
