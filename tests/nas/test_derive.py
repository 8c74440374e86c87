"""Genotype derivation from hand-set architecture weights (DARTS' rule; PC-DARTS' alpha*beta ranking)."""

import pytest
import torch

from vipr.nas.derive import derive_cell, supernet_genotype
from vipr.nas.genotype import Edge
from vipr.nas.ops import PRIMITIVES
from vipr.nas.supernet import Supernet, SupernetSpec

CANDS = (PRIMITIVES,) * 14
col = {name: i for i, name in enumerate(PRIMITIVES)}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only waits


def weights(entries: dict) -> torch.Tensor:
    """(14, 8) weights: a small floor everywhere, then {(edge, op): weight}."""
    w = torch.full((14, 8), 0.01)
    for (edge, op), value in entries.items():
        w[edge, col[op]] = value
    return w


# edges: node 2 <- 0, 1 (rows 0, 1); node 3 <- 0, 1, 2 (rows 2-4); node 4 <- 0..3 (5-8); node 5 <- 0..4 (9-13)
HAND_SET = weights({
    (0, "none"): 0.9, (0, "sep_conv_3x3"): 0.05,  # 'none' is strongest but never counts
    (1, "skip_connect"): 0.3,
    (2, "max_pool_3x3"): 0.2, (3, "dil_conv_5x5"): 0.6, (4, "sep_conv_5x5"): 0.4,
    (5, "avg_pool_3x3"): 0.5, (6, "sep_conv_3x3"): 0.45, (7, "skip_connect"): 0.7, (8, "none"): 0.99,
    (9, "dil_conv_3x3"): 0.1, (10, "sep_conv_3x3"): 0.2, (11, "skip_connect"): 0.3, (12, "max_pool_3x3"): 0.4,
    (13, "sep_conv_5x5"): 0.5,
})


def test_each_node_keeps_its_two_strongest_non_none_edges():
    cell = derive_cell(HAND_SET, CANDS, steps=4)
    assert cell.edges == (
        Edge("skip_connect", 1, 2), Edge("sep_conv_3x3", 0, 2),
        Edge("dil_conv_5x5", 1, 3), Edge("sep_conv_5x5", 2, 3),
        Edge("skip_connect", 2, 4), Edge("avg_pool_3x3", 0, 4),
        Edge("sep_conv_5x5", 4, 5), Edge("max_pool_3x3", 3, 5),
    )
    assert cell.concat == (2, 3, 4, 5)


def test_edge_weights_rerank_edges_but_not_ops():
    beta = torch.ones(14)
    beta[2] = 10.0  # node 3: edge 0->3 (max_pool 0.2) now beats 2->3 (sep_conv_5x5 0.4)
    cell = derive_cell(HAND_SET, CANDS, steps=4, edge_weights=beta)
    node3 = [e for e in cell.edges if e.target == 3]
    assert node3 == [Edge("max_pool_3x3", 0, 3), Edge("dil_conv_5x5", 1, 3)]


def test_supernet_genotype_uses_softmax_of_alpha_and_normalised_beta():
    torch.manual_seed(0)
    net = Supernet(SupernetSpec(channels=4, layers=3, num_classes=2, edge_normalization=True))
    with torch.no_grad():
        net.alphas_normal.copy_(torch.log(HAND_SET))  # softmax(log w) = w / sum(w): same order per row
        net.betas_normal.zero_()  # uniform beta within a node: ranking as without it
    genotype = supernet_genotype(net, {"strategy": "pcdarts", "seed": 0})
    assert genotype.normal.edges == derive_cell(HAND_SET, CANDS).edges
    assert genotype.reduce.reduction and genotype.provenance["strategy"] == "pcdarts"
    assert len(genotype.reduce.edges) == 8
    with torch.no_grad():
        net.betas_normal[2] = 5.0  # node 3's softmax(beta) now favours edge 0->3, as in the test above
    for max_skip in (None, 8):  # DARTS' rule, and through P-DARTS' skip limit
        node3 = [e for e in supernet_genotype(net, max_skip=max_skip).normal.edges if e.target == 3]
        assert node3 == [Edge("max_pool_3x3", 0, 3), Edge("dil_conv_5x5", 1, 3)]
