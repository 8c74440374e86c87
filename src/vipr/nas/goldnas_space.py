"""GOLD-NAS's enlarged search space: every cell its own gates, every node fed by every earlier node.

GOLD-NAS (Bi et al., "GOLD-NAS: Gradual, One-Level, Differentiable", arXiv 2007.03331), as
the unofficial implementation reads it: a DARTS-shaped network (3C stem, ``layers`` cells,
reductions at layers // 3 and 2 * layers // 3, preprocessing 1x1 ReLU-Conv-BN or
FactorizedReduce), but

* each cell has its own architecture weights ``alphas[cell, edge, op]`` (no normal/reduce sharing);
* an op's weight is a sigmoid gate ``sigmoid(alpha)``, not a softmax over the edge;
* node j sums ``gate * op(node i)`` over every earlier node i (cell inputs included) and
  every live op: no two-inputs rule, so a node keeps as many inputs as survive pruning;
* the cell output concatenates all intermediate nodes.

Pruned ops are masked by the boolean buffer ``live`` (saved with the weights) and not computed.
Ops are built with ``affine=False`` BatchNorm, as in DARTS' search network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.nas.flops import op_flops
from vipr.nas.genotype import CellSpec, Edge, Genotype, edge_list, reduction_layers
from vipr.nas.ops import FactorizedReduce, ReLUConvBN, create_op

STEM_MULTIPLIER = 3


class GoldCell(nn.Module):
    def __init__(self, ops: tuple[str, ...], steps: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction, self.steps, self.edges = reduction, steps, edge_list(steps)
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.ops = nn.ModuleList(
            nn.ModuleList(create_op(name, c, 2 if reduction and i < 2 else 1, affine=False) for name in ops)
            for i, _ in self.edges)

    def forward(self, s0: Tensor, s1: Tensor, gates: Tensor, live: list[list[bool]]) -> Tensor:
        """gates: (E, O) sigmoid weights; live: (E, O) as nested lists (pruned ops are skipped)."""
        states, e = [self.pre0(s0), self.pre1(s1)], 0
        for j in range(2, self.steps + 2):  # edges are ordered by target, then source (edge_list)
            node = None
            for i in range(j):
                for o, op in enumerate(self.ops[e]):
                    if live[e][o]:
                        y = op(states[i]) * gates[e, o]
                        node = y if node is None else node + y
                e += 1
            if node is None:  # pruning keeps one input per node (select_prunes), so only a hand-edited mask
                raise RuntimeError(f"node {j} of a GOLD-NAS cell has no live input")
            states.append(node)
        return torch.cat(states[2:], dim=1)  # (N, steps * C, H, W)


class GoldSupernet(nn.Module):
    """The GOLD-NAS search network; ``forward(x) -> logits``; ``alphas`` (layers, E, O) is a parameter."""

    def __init__(self, channels: int, layers: int, num_classes: int, ops: tuple[str, ...], steps: int = 4,
                 alpha_init: float = 0.0):
        super().__init__()
        self.channels, self.layers, self.steps, self.op_names = channels, layers, steps, tuple(ops)
        c_stem = STEM_MULTIPLIER * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        self.reductions = sorted(reduction_layers(layers))
        c_pp, c_p, c, reduction_prev = c_stem, c_stem, channels, False
        self.cells, self.cell_channels = nn.ModuleList(), []
        for i in range(layers):
            reduction = i in self.reductions
            c = c * 2 if reduction else c
            self.cells.append(GoldCell(self.op_names, steps, c_pp, c_p, c, reduction, reduction_prev))
            self.cell_channels.append(c)
            c_pp, c_p, reduction_prev = c_p, steps * c, reduction
        self.classifier = nn.Linear(c_p, num_classes)
        shape = (layers, len(edge_list(steps)), len(self.op_names))
        self.alphas = nn.Parameter(torch.full(shape, float(alpha_init)))
        self.register_buffer("live", torch.ones(shape, dtype=torch.bool))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alphas"]

    def gates(self) -> Tensor:
        """sigmoid(alpha), zero where pruned: (layers, E, O)."""
        return torch.sigmoid(self.alphas) * self.live

    def forward(self, x: Tensor) -> Tensor:
        gates, live = self.gates(), self.live.tolist()
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, gates[i], live[i])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def op_flops_table(self, image_size: int) -> Tensor:
        """Multiply-adds of every (cell, edge, op) on one image of ``image_size`` px: (layers, E, O) float64."""
        cache: dict[tuple, int] = {}
        table = torch.zeros(self.alphas.shape, dtype=torch.float64)
        side = image_size  # small stem: cells before the first reduction see the full image
        for k, cell in enumerate(self.cells):
            side = side // 2 if cell.reduction else side
            for e, (i, _) in enumerate(cell.edges):
                stride = 2 if cell.reduction and i < 2 else 1
                for o, name in enumerate(self.op_names):
                    key = (name, self.cell_channels[k], side * stride, stride)
                    if key not in cache:
                        cache[key] = op_flops(name, key[1], key[2], stride)
                    table[k, e, o] = cache[key]
        return table

    def genotype(self, provenance: dict | None = None) -> Genotype:
        """The live ops as a per-cell genotype (every intermediate node in each cell's output)."""
        edges = edge_list(self.steps)
        concat = tuple(range(2, self.steps + 2))
        specs = []
        for k, cell_live in enumerate(self.live.tolist()):
            kept = tuple(Edge(self.op_names[o], edges[e][0], edges[e][1])
                         for e, row in enumerate(cell_live) for o, alive in enumerate(row) if alive)
            specs.append(CellSpec(kept, concat, k in self.reductions))
        normal = next(s for s in specs if not s.reduction)
        return Genotype(normal, specs[self.reductions[0]], self.steps, tuple(specs),
                        dict(provenance or {})).validate()
