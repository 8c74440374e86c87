"""vipr.nas.wide: batched edges are the per-edge MixedOp sums (outputs, gradients, running statistics)."""

import copy

import pytest
import torch

from vipr.nas.ops import PRIMITIVES
from vipr.nas.supernet import Supernet, SupernetSpec
from vipr.nas.wide import edge_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def test_edge_groups_follow_when_each_source_state_exists():
    groups = edge_groups(4)
    assert [g.edges for g in groups] == [[0, 1, 2, 3, 5, 6, 9, 10], [4, 7, 11], [8, 12], [13]]
    assert [g.sources for g in groups] == [[0, 1] * 4, [2, 2, 2], [3, 3], [4]]
    assert [g.targets for g in groups] == [[0, 0, 1, 1, 2, 2, 3, 3], [1, 2, 3], [2, 3], [3]]


def subsets() -> tuple[tuple[str, ...], ...]:
    """P-DARTS-like per-edge candidates: ops present on only some edges of a group."""
    return tuple(("none", PRIMITIVES[1 + e % 7], PRIMITIVES[1 + (e + 3) % 7]) for e in range(14))


def wide_and_reference(spec: SupernetSpec) -> tuple[Supernet, Supernet]:
    torch.manual_seed(0)
    wide = Supernet(spec).double().to(memory_format=torch.channels_last)  # float64: equal up to rounding
    with torch.no_grad():
        for p in wide.arch_parameters():
            p.copy_(torch.randn_like(p))
    reference = copy.deepcopy(wide)
    for cell in wide.cells:
        cell.wide = True
    for cell in reference.cells:
        cell.wide = False
    return wide, reference


@pytest.mark.parametrize("settings", [
    dict(partial_channels=4, edge_normalization=True),  # PC-DARTS
    dict(partial_channels=2),  # bypass without edge weights
    dict(),  # DARTS, K = 1
    dict(candidates_normal=subsets(), candidates_reduce=subsets()),  # P-DARTS subsets: the index_add path
], ids=["pcdarts", "k2", "darts", "subsets"])
def test_wide_training_step_equals_per_edge_mixed_ops(settings):
    wide, reference = wide_and_reference(SupernetSpec(channels=8, layers=4, num_classes=3, **settings))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # the second pass reads running statistics the first one wrote
        out, expected = wide(x), reference(x)
        assert torch.allclose(out, expected, atol=1e-12)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(wide.named_parameters(), reference.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-10 * q.grad.abs().max(), name
    for (name, b), c in zip(wide.named_buffers(), reference.buffers()):
        assert torch.allclose(b, c, atol=1e-12), name
    wide.eval(), reference.eval()
    assert torch.allclose(wide(x), reference(x), atol=1e-12)  # eval: each edge's own statistics


def test_wide_skip_dropout_is_applied_per_edge():
    cands = (("none", "skip_connect"),) * 14
    wide, reference = wide_and_reference(SupernetSpec(channels=8, layers=3, num_classes=3, skip_dropout=0.5,
                                                      candidates_normal=cands))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for net in (wide, reference):
        net.set_skip_dropout(1.0)  # every skip output dropped: the cells' normal nodes are zeros
    states = []
    wide.cells[0].register_forward_hook(lambda m, i, o: states.append(o))
    wide(x)
    assert states[0].abs().sum() == 0
