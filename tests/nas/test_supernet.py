"""The DARTS supernet: PC-DARTS channel sampling and edge normalisation, 'none' skipping, parameters."""

import pytest
import torch
import torch.nn.functional as F

from vipr.errors import ConfigError
from vipr.nas.ops import PRIMITIVES
from vipr.nas.supernet import MixedOp, Supernet, SupernetSpec, channel_shuffle

TINY = dict(channels=4, layers=3, num_classes=3)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only waits


def test_channel_shuffle_matches_explicit_permutation():
    x = torch.randn(2, 12, 3, 3)
    out = channel_shuffle(x, groups=4)
    per_group = 12 // 4
    for c in range(per_group):
        for g in range(4):
            assert torch.equal(out[:, c * 4 + g], x[:, g * per_group + c])  # ShuffleNet's interleave


def test_partial_channels_stride1_only_first_slice_goes_through_the_op():
    torch.manual_seed(0)
    op = MixedOp(8, 1, ("none", "sep_conv_3x3"), k=4, skip_dropout=0.0)
    x = torch.randn(2, 8, 6, 6)
    w = [torch.tensor(0.3), torch.tensor(0.7)]
    out = op(x, w)
    through = 0.7 * op.ops[0](F.relu(x[:, :2]))  # C/K = 2 channels through sep_conv (ReLU shared per edge)
    assert torch.allclose(out, channel_shuffle(torch.cat([through, x[:, 2:]], 1), 4), atol=1e-6)
    # changing a bypassed channel changes only its own shuffled output channel, unscaled
    y = x.clone()
    y[:, 5] += 1.0
    diff = (op(y, w) - out).abs().sum(dim=(0, 2, 3))
    assert torch.nonzero(diff).flatten().tolist() == [(5 % 2) * 4 + 5 // 2]


def test_partial_channels_stride2_bypass_is_max_pooled():
    torch.manual_seed(0)
    op = MixedOp(4, 2, ("avg_pool_3x3",), k=2, skip_dropout=0.0)
    x = torch.randn(2, 4, 8, 8)
    out = op(x, [torch.tensor(1.0)])
    expected_rest = F.max_pool2d(x[:, 2:], 2, 2)
    assert out.shape == (2, 4, 4, 4)
    assert torch.allclose(out[:, 1::2], expected_rest)  # shuffle(groups=2) puts the bypass at odd channels


def test_none_is_never_computed_and_weights_scale_ops():
    op = MixedOp(4, 1, ("none", "skip_connect"), k=1, skip_dropout=0.0)
    assert len(op.ops) == 1 and op.index == [1]
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(op(x, [torch.tensor(0.9), torch.tensor(0.25)]), 0.25 * x)


def test_edge_normalisation_is_softmax_over_each_nodes_inputs():
    torch.manual_seed(0)
    net = Supernet(SupernetSpec(**TINY, edge_normalization=True))
    with torch.no_grad():
        net.betas_normal.copy_(torch.randn(14))
    got, start = net.edge_weights(False), 0
    for node_inputs in (2, 3, 4, 5):
        b = net.betas_normal[start:start + node_inputs]
        explicit = torch.exp(b) / torch.exp(b).sum()
        assert torch.allclose(got[start:start + node_inputs], explicit)
        start += node_inputs


def test_cell_output_with_edge_normalisation_matches_explicit_sum():
    torch.manual_seed(0)
    net = Supernet(SupernetSpec(**TINY, edge_normalization=True, partial_channels=2)).eval()
    with torch.no_grad():
        net.betas_normal.copy_(torch.randn(14))
        net.alphas_normal.copy_(torch.randn(14, 8))
    cell = net.cells[0]
    s = torch.randn(2, 12, 6, 6)
    w, ew = net.op_weights(False), net.edge_weights(False)
    states, e = [cell.pre0(s), cell.pre1(s)], 0
    for _ in range(4):
        node = 0
        for h in states:
            node = node + ew[e] * cell.edges[e](h, list(w[e]))
            e += 1
        states.append(node)
    assert torch.allclose(cell(s, s, w * ew[:, None], ew), torch.cat(states[2:], 1), atol=1e-5)  # as Supernet.forward passes them


def test_arch_parameters_are_registered_and_split_from_weights():
    net = Supernet(SupernetSpec(**TINY, edge_normalization=True))
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert [tuple(p.shape) for p in arch] == [(14, 8), (14, 8), (14,), (14,)]
    assert len(arch) + len(weights) == len(list(net.parameters()))
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"} <= set(net.state_dict())
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_per_edge_candidates_shape_alpha():
    cands = tuple(("none", PRIMITIVES[3 + e % 4], "sep_conv_3x3") if e % 4 else ("none", "skip_connect", "max_pool_3x3")
                  for e in range(14))
    net = Supernet(SupernetSpec(**TINY, candidates_normal=cands, skip_dropout=0.5))
    assert net.alphas_normal.shape == (14, 3) and net.alphas_reduce.shape == (14, 8)
    net.set_skip_dropout(0.2)
    assert {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}


@pytest.mark.parametrize("spec, message", [
    (dict(channels=6, layers=3, partial_channels=4), "divisible"),
    (dict(channels=4, layers=2), "at least 3 cells"),
    (dict(channels=4, layers=3, candidates_normal=(("sep_conv_3x3",),) * 13), "14 edges"),
    (dict(channels=4, layers=3, candidates_normal=(("sep_conv_3x4",),) * 14), "did you mean"),
])
def test_bad_specs_fail_before_building(spec, message):
    with pytest.raises(ConfigError, match=message):
        Supernet(SupernetSpec(**spec))


def test_mixed_op_equals_the_explicit_weighted_sum_of_registry_ops():
    """Shared ReLU, skipped 'none' and the fast depthwise convs leave the DARTS MixedOp sum unchanged."""
    from vipr.nas.fastconv import speed_up_depthwise
    from vipr.nas.ops import create_op

    torch.manual_seed(0)
    op = MixedOp(4, 1, PRIMITIVES, k=1, skip_dropout=0.0)
    assert speed_up_depthwise(op) == 6  # as the supernet does: 2 + 2 in the sep_convs, 1 + 1 in the dil_convs
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(8), 0)
    expected = 0
    for i, name in enumerate(PRIMITIVES):
        ref = create_op(name, 4, 1, affine=False)
        if name == "none":
            continue
        ref.load_state_dict(op.ops[op.index.index(i)].state_dict(), strict=False)
        if "pool" in name:
            ref = torch.nn.Sequential(ref, torch.nn.BatchNorm2d(4, affine=False))
        expected = expected + w[i] * ref(x)
    assert torch.allclose(op(x, list(w)), expected, atol=1e-5)


@pytest.mark.parametrize("side", [8, 12])  # 12 -> 6 -> 3: odd sides take the native path
def test_fast_depthwise_supernet_matches_native_outputs_and_gradients(side):
    outputs = []
    for fast in (False, True):
        torch.manual_seed(0)
        net = Supernet(SupernetSpec(**TINY, fast_depthwise=fast)).to(memory_format=torch.channels_last)
        x = torch.randn(2, 3, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
        loss = net(x).square().sum()
        grads = torch.autograd.grad(loss, [x, *net.parameters()])
        outputs.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = outputs
    assert torch.allclose(l0, l1, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(g0, g1))
