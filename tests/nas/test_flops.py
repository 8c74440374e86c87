"""Parameter and FLOPs (multiply-add) counts against hand computation."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vipr.nas.flops import count_flops, count_params, op_flops, op_flops_table
from vipr.nas.genotype import DARTS_V2
from vipr.nas.network import DartsNetwork


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 32x32 out
        nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),  # depthwise, 16x16 out
        nn.Conv2d(8, 16, 1),  # pointwise with bias, 16x16 out
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_conv_net_matches_hand_count(one_thread):
    hand = 32 * 32 * 8 * (3 * 3 * 3) + 16 * 16 * 8 * (1 * 3 * 3) + 16 * 16 * 16 * 8 + 16 * 10
    net = small_net()
    assert count_flops(net, 32) == hand
    with FlopCounterMode(display=False) as counter:  # torch counts a multiply-add as 2 FLOPs
        net.eval()(torch.zeros(1, 3, 32, 32))
    assert counter.get_total_flops() == 2 * hand
    params = 8 * 27 + 2 * 8 + 8 * 9 + (16 * 8 + 16) + (16 * 10 + 10)
    assert count_params(net) == params
    assert net.training is False  # count_flops restores the mode it found (eval here)


def test_params_exclude_the_auxiliary_tower(one_thread):
    net = DartsNetwork(DARTS_V2, channels=4, layers=5, num_classes=10, auxiliary=True)
    tower = sum(p.numel() for p in net.aux_head.parameters())
    assert count_params(net) == sum(p.numel() for p in net.parameters()) - tower


def test_op_flops_table_by_hand(one_thread):
    c, side = 16, 8
    sep = 2 * (side * side * c * 9 + side * side * c * c)  # two (depthwise 3x3 + pointwise 1x1) blocks
    table = op_flops_table(["skip_connect", "sep_conv_3x3", "max_pool_3x3", "dil_conv_3x3"], c, side)
    assert table == {"skip_connect": 0, "sep_conv_3x3": sep, "max_pool_3x3": 0,
                     "dil_conv_3x3": side * side * c * 9 + side * side * c * c}
    half = side // 2  # stride 2: FactorizedReduce = two 1x1 convs C -> C/2 on the half-size grid
    assert op_flops("skip_connect", c, side, stride=2) == 2 * half * half * c * (c // 2)
    assert op_flops("sep_conv_3x3", c, side, stride=2) == half * half * c * 9 + half * half * c * c + sep // 2 // 4


def test_darts_v2_cifar_network_matches_the_paper(one_thread):
    """DARTS (arXiv 1806.09055), table 1: 3.3 M parameters at 36 channels and 20 cells (about 530 M multiply-adds)."""
    net = DartsNetwork(DARTS_V2, channels=36, layers=20, num_classes=10, auxiliary=True)
    assert round(count_params(net) / 1e6, 1) == 3.3
    assert 500e6 < count_flops(net, 32) < 560e6
