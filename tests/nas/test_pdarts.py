"""P-DARTS: op dropping between stages, the skip-connect limit, the skip-dropout schedule, settings."""

import math

import pytest
import torch

from vipr.errors import ConfigError
from vipr.nas.derive import derive_cell, limit_skips
from vipr.nas.ops import PRIMITIVES
from vipr.nas.pdarts import drop_ops, skip_dropout_rate
from vipr.nas.search import build_config

col = {name: i for i, name in enumerate(PRIMITIVES)}


def test_drop_ops_keeps_the_highest_weights_in_primitive_order():
    w = torch.tensor([[0.30, 0.01, 0.02, 0.20, 0.15, 0.12, 0.10, 0.10],
                      [0.01, 0.40, 0.02, 0.03, 0.04, 0.05, 0.06, 0.39]])
    kept = drop_ops(w, (PRIMITIVES, PRIMITIVES), keep=5)
    # 'none' is kept when it is strong, as in the authors' intermediate stages
    assert kept[0] == ("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3")
    assert kept[1] == ("max_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    # the authors' last stage: 'none' goes first
    three = (("none", "skip_connect", "sep_conv_3x3"),)
    last = drop_ops(torch.tensor([[0.5, 0.3, 0.2]]), three, keep=1, none_first=True)
    assert last == (("skip_connect",),)


def skip_heavy_weights():
    """Normal cell where every node's strongest edge is a skip_connect (4 skips), with runner-up ops."""
    w = torch.full((14, 8), 0.01)
    strong = {0: 0.6, 2: 0.5, 5: 0.7, 9: 0.4}  # skip strength on edges 0->2, 0->3, 0->4, 0->5
    for edge, value in strong.items():
        w[edge, col["skip_connect"]] = value
        w[edge, col["sep_conv_3x3"]] = 0.3  # runner-up op of the same edge
    for edge in (1, 3, 6, 10):  # second edge of each node: 1->node, sep_conv_5x5 0.2
        w[edge, col["sep_conv_5x5"]] = 0.2
    return w


def test_limit_skips_removes_the_weakest_skip_connects():
    w = skip_heavy_weights()
    cands = (PRIMITIVES,) * 14
    assert sum(e.op == "skip_connect" for e in derive_cell(w, cands).edges) == 4
    cell = limit_skips(w, cands, steps=4, max_skip=2)
    skips = sorted((e.source, e.target) for e in cell.edges if e.op == "skip_connect")
    assert skips == [(0, 2), (0, 4)]  # the two strongest (0.6, 0.7) stay
    replaced = {(e.source, e.target): e.op for e in cell.edges}
    assert replaced[(0, 3)] == "sep_conv_3x3" and replaced[(0, 5)] == "sep_conv_3x3"  # next-best op of the edge
    assert limit_skips(w, cands, steps=4, max_skip=4).edges == derive_cell(w, cands).edges
    assert all(e.op != "skip_connect" for e in limit_skips(w, cands, steps=4, max_skip=0).edges)


def test_skip_dropout_schedule():
    # warm-up (e < W): p * (E - e - 1) / E; after: p * exp(-0.2 (e - W)); E = 25, W = 10
    assert skip_dropout_rate(0.4, 0, 25, 10, 0.2) == pytest.approx(0.4 * 24 / 25)
    assert skip_dropout_rate(0.4, 9, 25, 10, 0.2) == pytest.approx(0.4 * 15 / 25)
    assert skip_dropout_rate(0.4, 10, 25, 10, 0.2) == pytest.approx(0.4)
    assert skip_dropout_rate(0.4, 15, 25, 10, 0.2) == pytest.approx(0.4 * math.exp(-1.0))


def test_settings_defaults_and_errors():
    config = build_config({"strategy": {"name": "pdarts"}})
    s = config.strategy
    assert (s.stage_layers, s.stage_ops, s.skip_dropout, s.max_skip, s.epochs, s.warmup_epochs) == (
        (5, 11, 17), (8, 5, 3), (0.1, 0.4, 0.7), 2, 25, 10)
    with pytest.raises(ConfigError, match="one entry per stage"):
        build_config({"strategy": {"name": "pdarts", "stage_layers": [5, 11]}})
    with pytest.raises(ConfigError, match="stage_ops must start at 8"):
        build_config({"strategy": {"name": "pdarts", "stage_ops": [5, 3, 2]}})
