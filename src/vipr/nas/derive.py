"""Genotype from architecture weights: DARTS' discretisation rule.

DARTS (Liu et al., arXiv 1806.09055), section 2.4 and ``genotype()`` of ``model_search.py``:
each intermediate node keeps the 2 incoming edges whose strongest non-``none`` op weight is
largest (weights = softmax(alpha) over the edge's candidates); each kept edge gets the argmax
op excluding ``none``. PC-DARTS (arXiv 1907.05737) ranks with the op weights multiplied by the
edge's normalised beta (``edge_weights``); the op choice on an edge is unchanged by it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vipr.nas.genotype import CellSpec, Edge, Genotype


def edge_strengths(op_weights: Tensor, candidates, edge_weights: Tensor | None = None) -> tuple[list[float], list[str]]:
    """Per edge: (the largest non-none weight, times the edge weight if given; its op name).

    Args:
        op_weights: (E, n) softmax(alpha) rows; ``candidates[e][i]`` names column i of edge e.
        edge_weights: (E,) normalised betas or None.
    """
    strengths, ops = [], []
    for e, row in enumerate(op_weights.detach().float().cpu().tolist()):
        scored = [(w, name) for w, name in zip(row, candidates[e]) if name != "none"]
        best_w, best_op = max(scored, key=lambda s: s[0]) if scored else (float("-inf"), "none")
        best_op = best_op if best_w > float("-inf") else "none"  # every op removed (P-DARTS skip limit)
        scale = float(edge_weights[e]) if edge_weights is not None else 1.0
        strengths.append(best_w * scale)
        ops.append(best_op)
    return strengths, ops


def derive_cell(op_weights: Tensor, candidates, steps: int = 4, edge_weights: Tensor | None = None,
                reduction: bool = False) -> CellSpec:
    """The 2 strongest incoming edges of each intermediate node, strongest first."""
    strengths, ops = edge_strengths(op_weights, candidates, edge_weights)
    edges, start = [], 0
    for node in range(2, steps + 2):
        incoming = range(start, start + node)  # edges from nodes 0 .. node - 1
        ranked = sorted(incoming, key=lambda e: -strengths[e])  # stable: ties keep the lower source
        edges += [Edge(ops[e], e - start, node) for e in ranked[:2] if ops[e] != "none"]
        start += node
    return CellSpec(tuple(edges), tuple(range(2, steps + 2)), reduction)


def limit_skips(op_weights: Tensor, candidates, steps: int, max_skip: int,
                edge_weights: Tensor | None = None) -> CellSpec:
    """``derive_cell`` with at most ``max_skip`` skip_connect edges (P-DARTS: the weakest removed)."""
    weights = op_weights.detach().float().clone()
    while True:
        cell = derive_cell(weights, candidates, steps, edge_weights)
        skips = [e for e in cell.edges if e.op == "skip_connect"]
        if len(skips) <= max_skip:
            return cell
        rows = [edge_index(e.source, e.target) for e in skips]
        index = [(row, candidates[row].index("skip_connect")) for row in rows]
        weakest = min(index, key=lambda ij: float(weights[ij]))
        weights[weakest] = -math.inf  # never chosen again; an edge left with nothing drops out


def edge_index(source: int, target: int) -> int:
    """Row of edge source -> target in alpha (edges grouped by target node, then by source)."""
    return sum(range(2, target)) + source


def derive_genotype(normal: Tensor, reduce: Tensor, candidates_normal, candidates_reduce, steps: int = 4,
                    edge_normal: Tensor | None = None, edge_reduce: Tensor | None = None,
                    provenance: dict | None = None, max_skip: int | None = None) -> Genotype:
    """A validated Genotype from both cell types' op weights (and PC-DARTS edge weights); with
    ``max_skip``, the normal cell keeps at most that many skip_connects (P-DARTS)."""
    normal_cell = (derive_cell(normal, candidates_normal, steps, edge_normal) if max_skip is None
                   else limit_skips(normal, candidates_normal, steps, max_skip, edge_normal))
    return Genotype(normal_cell, derive_cell(reduce, candidates_reduce, steps, edge_reduce, True),
                    steps, provenance=dict(provenance or {})).validate()


def supernet_genotype(model, provenance: dict | None = None, max_skip: int | None = None) -> Genotype:
    """derive_genotype for a vipr.nas.supernet.Supernet's current alphas (and betas)."""
    spec = model.spec
    with torch.no_grad():
        return derive_genotype(model.op_weights(False), model.op_weights(True), spec.candidates(False),
                               spec.candidates(True), spec.steps, model.edge_weights(False),
                               model.edge_weights(True), provenance, max_skip)
