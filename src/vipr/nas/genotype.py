"""Architectures as data: ``Genotype`` (the cells a search found), saved as JSON with provenance.

A cell has two input nodes (0: the output of the cell two back, 1: of the previous cell)
and ``steps`` intermediate nodes numbered 2 .. steps + 1. Each ``Edge`` applies ``op`` to
node ``source`` and adds the result into node ``target`` (source < target). The cell's
output concatenates the nodes in ``concat``. DARTS-style genotypes keep two edges per
intermediate node; GOLD-NAS genotypes keep any number and may give every cell its own
spec (``cells``), which then overrides the normal/reduce pattern.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vipr.errors import ConfigError
from vipr.fsutil import atomic_write_text
from vipr.nas.ops import OPS, create_op

FORMAT = "vipr-genotype/1"


def edge_list(steps: int) -> list[tuple[int, int]]:
    """(source, target) of every edge of a cell of ``steps`` nodes, in alpha's row order: by
    target j in 2 .. steps + 1, then source i < j (DARTS: 14 edges for 4 nodes)."""
    return [(i, j) for j in range(2, steps + 2) for i in range(j)]


@dataclass(frozen=True)
class Edge:
    op: str
    source: int  # 0, 1: cell inputs; 2..: intermediate nodes
    target: int  # intermediate node, 2 .. steps + 1


@dataclass(frozen=True)
class CellSpec:
    edges: tuple[Edge, ...]
    concat: tuple[int, ...]
    reduction: bool = False


@dataclass(frozen=True)
class Genotype:
    normal: CellSpec
    reduce: CellSpec
    steps: int = 4
    cells: tuple[CellSpec, ...] = ()  # one spec per cell (GOLD-NAS); () = normal/reduce pattern
    provenance: dict = field(default_factory=dict)  # strategy, data digest, seed, epochs, flops, params

    def cell_specs(self, layers: int) -> list[CellSpec]:
        """The spec of each of ``layers`` cells, reductions at layers // 3 and 2 * layers // 3."""
        if self.cells:
            if len(self.cells) != layers:
                raise ConfigError(f"genotype has {len(self.cells)} per-cell specs but the network has {layers} cells; "
                                  f"use --layers {len(self.cells)}")
            return list(self.cells)
        reductions = reduction_layers(layers)
        return [self.reduce if i in reductions else self.normal for i in range(layers)]

    def validate(self) -> "Genotype":
        for spec in (self.normal, self.reduce, *self.cells):
            _validate_cell(spec, self.steps)
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def reduction_layers(layers: int) -> set[int]:
    """DARTS' reduction cells: at one and two thirds of the depth (needs at least 3 cells)."""
    if layers < 3:
        raise ConfigError(f"a network needs at least 3 cells for its two reductions, got {layers}")
    return {layers // 3, 2 * layers // 3}


def from_dict(data: dict) -> Genotype:
    if data.get("format") != FORMAT:
        raise ConfigError(f"not a vipr genotype (expected format {FORMAT!r}, got {data.get('format')!r})")
    try:
        cell = lambda d: CellSpec(tuple(Edge(**e) for e in d["edges"]), tuple(d["concat"]), bool(d.get("reduction", False)))
        genotype = Genotype(cell(data["normal"]), cell(data["reduce"]), int(data.get("steps", 4)),
                            tuple(cell(c) for c in data.get("cells", ())), dict(data.get("provenance", {})))
    except (KeyError, TypeError) as err:
        raise ConfigError(f"malformed genotype: {err}; write it with `vipr nas search` or Genotype.save") from None
    return genotype.validate()


def load(path: str | os.PathLike) -> Genotype:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"genotype file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not JSON: {err}") from None
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def from_darts(normal: list[tuple[str, int]], reduce: list[tuple[str, int]], steps: int = 4, **provenance) -> Genotype:
    """Convert the official DARTS format (two ``(op, input)`` pairs per node, in node order)."""
    def cell(pairs, reduction):
        edges = tuple(Edge(op, source, 2 + i // 2) for i, (op, source) in enumerate(pairs))
        return CellSpec(edges, tuple(range(2, steps + 2)), reduction)
    return Genotype(cell(normal, False), cell(reduce, True), steps, provenance=provenance).validate()


def _validate_cell(spec: CellSpec, steps: int) -> None:
    last = steps + 1
    for e in spec.edges:
        if e.op not in OPS:
            create_op(e.op, 2, 1)  # raises the "unknown op ... did you mean" error
        if e.op == "none":
            raise ConfigError("a genotype edge cannot be 'none'; drop the edge instead")
        if not (2 <= e.target <= last and 0 <= e.source < e.target):
            raise ConfigError(f"edge {e.op} {e.source}->{e.target} does not fit a cell of {steps} nodes "
                              f"(sources 0..{last - 1}, targets 2..{last}, source < target)")
    bad = [n for n in spec.concat if not 0 <= n <= last]
    if bad or not spec.concat:
        raise ConfigError(f"cell output concat {list(spec.concat)} must name nodes 0..{last}")
    fed = {e.target for e in spec.edges}
    for node in spec.concat:
        if node >= 2 and node not in fed:
            raise ConfigError(f"node {node} is in the cell output but has no incoming edge")


# DARTS V2 (the paper's CIFAR-10 cell, second order), a ready genotype for tests and smoke runs.
DARTS_V2 = from_darts(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    strategy="darts", source="arXiv 1806.09055 (DARTS_V2)")
