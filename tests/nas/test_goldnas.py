"""GOLD-NAS (arXiv 2007.03331): the pruning rules, the lambda schedule and the penalty on hand-set numbers."""

import math

import pytest
import torch

from vipr.nas.config import DataSection, NetworkSection, SearchConfig
from vipr.nas.goldnas import (GoldNasSettings, node_index, node_normalised, resource_penalty, select_prunes,
                              update_lambda, write_front)
from vipr.nas.genotype import edge_list
from vipr.nas.strategy import SearchContext, create_strategy
from vipr.errors import ConfigError
from vipr.config import from_dict


def test_edges_reach_every_earlier_node():
    assert edge_list(2) == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert node_index(2, 2).tolist() == [[2, 2], [2, 2], [3, 3], [3, 3], [3, 3]]


def test_penalty_matches_an_explicit_loop():
    torch.manual_seed(0)
    steps, ops = 3, 2
    nodes = node_index(steps, ops)
    w = torch.rand(2, len(edge_list(steps)), ops)  # two cells of sigmoid gates
    live = torch.rand(w.shape) > 0.3
    flops = torch.rand(w.shape) * 5
    expected = 0.0
    for cell in range(2):
        for j in range(2, steps + 2):
            entries = [(e, o) for e, (_, t) in enumerate(edge_list(steps)) for o in range(ops)
                       if t == j and live[cell, e, o]]
            total = sum(float(w[cell, e, o]) for e, o in entries)
            for e, o in entries:
                share = float(w[cell, e, o]) / total
                expected += math.log(1 + len(entries) * share) * float(flops[cell, e, o])
                assert float(node_normalised(w, live, nodes)[cell, e, o]) == pytest.approx(share, rel=1e-5)
    assert float(resource_penalty(w, live, nodes, flops)) == pytest.approx(expected, rel=1e-5)
    assert float(node_normalised(w, live, nodes)[~live].abs().sum()) == 0.0


def test_penalty_gradient_pushes_expensive_ops_down():
    nodes = node_index(1, 2)  # one node, inputs 0 and 1, ops (cheap, expensive)
    alphas = torch.zeros(1, 2, 2, requires_grad=True)
    flops = torch.tensor([[[0.0, 10.0], [0.0, 10.0]]])
    resource_penalty(torch.sigmoid(alphas), torch.ones(1, 2, 2, dtype=torch.bool), nodes, flops).backward()
    assert (alphas.grad[..., 1] > 0).all() and (alphas.grad[..., 0] < 0).all()


def test_prune_all_below_eta_min_and_n0_more_below_eta_max():
    weak = [0.005, 0.010, 0.02, 0.03, 0.04, 0.045, 0.05, 0.051]  # one weak input in each of 8 nodes
    weights = torch.tensor(weak + [0.5] * 8, dtype=torch.float64)  # ... and a strong one
    groups = torch.arange(16) % 8
    live = torch.ones(16, dtype=torch.bool)
    # <= 0.01 (inclusive): 0 and 1; then the 4 weakest <= 0.05: 0.02, 0.03, 0.04, 0.045 (not 0.05: n0 reached)
    assert select_prunes(weights, live, groups, 0.01, 0.05, 4) == [0, 1, 2, 3, 4, 5]
    assert select_prunes(weights, live, groups, 0.01, 0.05, 10) == [0, 1, 2, 3, 4, 5, 6]  # 0.051 stays
    assert select_prunes(weights, live, groups, 0.01, 0.05, 0) == [0, 1]
    live[0] = False  # already pruned ops are not pruned again
    assert select_prunes(weights, live, groups, 0.01, 0.05, 0) == [1]


def test_a_node_keeps_its_last_input():
    weights = torch.tensor([0.001, 0.002, 0.003])
    assert select_prunes(weights, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long),
                         0.01, 0.05, 4) == [0, 1]


def test_lambda_schedule():
    lam, step = 0.0, 1e-5
    lam, step = update_lambda(lam, step, pruned=0, n0=4, c0=2, base_step=1e-5)  # quiet: step doubles, lambda += step
    assert (lam, step) == pytest.approx((2e-5, 2e-5))
    lam, step = update_lambda(lam, step, pruned=3, n0=4, c0=2, base_step=1e-5)  # < n0 counts as quiet
    assert (lam, step) == pytest.approx((6e-5, 4e-5))
    lam, step = update_lambda(lam, step, pruned=4, n0=4, c0=2, base_step=1e-5)  # >= n0: lambda / c0, step reset
    assert (lam, step) == pytest.approx((3e-5, 1e-5))


def tiny_strategy(**settings):
    config = SearchConfig(data=DataSection(image_size=16), network=NetworkSection(channels=4, layers=3, steps=2),
                          strategy=GoldNasSettings(epochs=4, **settings))
    return create_strategy(SearchContext(config, num_classes=3, steps_per_epoch=1, provenance={"seed": 0}))


def test_records_the_architecture_when_pruning_resumes(tmp_path, one_thread):
    torch.manual_seed(0)
    strategy = tiny_strategy()
    batch = (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))
    strategy.begin_epoch(0)
    assert strategy.weight_step(batch)["loss"] > 0
    assert strategy.end_epoch(0)["pruned"] == 0 and strategy.lam == pytest.approx(2e-5)  # quiet epoch
    with torch.no_grad():
        strategy.net.alphas[1, 2, 1] = -20.0  # cell 1, edge 0->3, sep_conv_3x3: gate ~ 2e-9
    full_ops = int(strategy.net.live.sum())
    strategy.begin_epoch(1)
    metrics = strategy.end_epoch(1)
    assert metrics["pruned"] == 1 and metrics["live_ops"] == full_ops - 1
    (recorded,) = strategy.series  # the architecture the quiet epoch kept: all ops
    assert recorded["provenance"]["live_ops"] == full_ops and recorded["provenance"]["params"] > 0
    series = strategy.genotypes()
    assert len(series) == 2 and len(series[1].cells[1].edges) == len(series[0].cells[1].edges) - 1
    paths = write_front(series, tmp_path)
    assert [p.name for p in paths] == ["000.json", "001.json"] and (tmp_path / "front.json").is_file()
    again = tiny_strategy()
    again.load_state_dict(strategy.state_dict())
    assert torch.equal(again.net.live, strategy.net.live) and again.series == strategy.series


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'sep_conv_3x3'"):
        tiny_strategy(ops=("skip_connect", "sep_conv_3x4"))
    with pytest.raises(ConfigError, match="eta_min <= eta_max"):
        tiny_strategy(eta_min=0.1, eta_max=0.05)
    with pytest.raises(ConfigError, match="unknown config key 'strategy.eta'"):
        from_dict(SearchConfig, {"strategy": {"name": "goldnas", "eta": 0.1}})
