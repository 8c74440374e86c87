"""The evaluation network of a genotype: DARTS' ``NetworkCIFAR`` behind vipr's backbone contract.

DARTS (Liu et al., arXiv 1806.09055), ``model.py`` of quark0/darts: a 3C stem, ``layers``
cells with reductions at layers // 3 and 2 * layers // 3 (channels doubled there), each
cell preprocessing its two inputs (1x1 ReLU-Conv-BN, or FactorizedReduce after a
reduction) and summing one op per edge into each node; drop-path on non-identity ops in
training; an auxiliary classifier after the second reduction. Any ``Genotype`` works, the
GOLD-NAS per-cell ones included (any number of edges per node, per-cell concat).

The backbone contract (DESIGN.md): ``forward_features`` pools the last cell,
``forward_intermediates`` gives the outputs of three stages split at the reductions
(cells [0, r1), [r1, r2), [r2, layers)), ``reset_head`` swaps the classifier (and the
auxiliary one, which predicts the same classes). The registry entry is ``darts_net`` in
:mod:`vipr.models.backbones`; its genotype is a plain dict so checkpoint metadata stays data.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vipr.errors import ConfigError
from vipr.nas.genotype import CellSpec, Genotype, reduction_layers
from vipr.nas.ops import FactorizedReduce, ReLUConvBN, create_op

STEM_MULTIPLIER = 3  # stem width = 3C, as DARTS
AUX_POOL_MIN_SIDE = 8  # px; DARTS' aux tower pools 8x8 maps (32 px input) with a 5x5 window, stride 3


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, scale the rest by 1 / keep (DARTS utils.drop_path).

    Args:
        x: (N, C, H, W).
    """
    keep = 1.0 - drop_prob
    mask = torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), keep, device=x.device, dtype=x.dtype))
    return x / keep * mask


class Cell(nn.Module):
    """One cell of a genotype: node j = sum over edges (op, i, j) of op(node i); output = concat."""

    def __init__(self, spec: CellSpec, steps: int, c_prev_prev: int, c_prev: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        _check_cell(spec, steps, reduction)
        self.reduction, self.steps = reduction, steps
        # After a reduction the cell two back is twice as large: FactorizedReduce halves it.
        self.preprocess0 = FactorizedReduce(c_prev_prev, c) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.edges = sorted(spec.edges, key=lambda e: (e.target, e.source))
        # Only the cell inputs are downsampled in a reduction cell; nodes already are at half size.
        self.ops = nn.ModuleList(create_op(e.op, c, 2 if reduction and e.source < 2 else 1) for e in self.edges)
        self.concat = tuple(spec.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: dict[int, torch.Tensor] = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for edge, op in zip(self.edges, self.ops):
            h = op(states[edge.source])
            if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob)
            states[edge.target] = h if edge.target not in states else states[edge.target] + h
        return torch.cat([states[i] for i in self.concat], dim=1)  # (N, multiplier * C, H, W)


def _check_cell(spec: CellSpec, steps: int, reduction: bool) -> None:
    """Errors the genotype's own validation cannot see: dangling nodes, input nodes in a reduction output."""
    fed = {0, 1} | {e.target for e in spec.edges}
    for e in spec.edges:
        if e.source not in fed:
            raise ConfigError(f"edge {e.op} {e.source}->{e.target} reads node {e.source}, which has no incoming edge; "
                              "drop the edge or give the node an input")
    if reduction and any(n < 2 for n in spec.concat):
        raise ConfigError(f"reduction cell output {list(spec.concat)} names an input node (0 or 1), which is at the "
                          "full resolution; concatenate intermediate nodes only")


class AuxiliaryHead(nn.Module):
    """DARTS' AuxiliaryHeadCIFAR: ReLU, AvgPool 5 stride 3, 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU, Linear.

    On maps smaller than 8x8 (inputs under 32 px) the 5x5 pool does not fit: an adaptive
    pool to 2x2 replaces it; on larger maps the 2x2 conv's output is averaged to 1x1.
    """

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        x = self.pool(x) if x.shape[-1] >= AUX_POOL_MIN_SIDE else F.adaptive_avg_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(self.features(x), 1)  # (N, 768, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


def _stem(c_stem: int, small_stem: bool) -> nn.Sequential:
    if small_stem:  # DARTS' CIFAR stem: 3x3 stride 1
        return nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
    # Larger images: two stride-2 3x3 convs (4x smaller), a lighter NetworkImageNet stem (which is 8x).
    return nn.Sequential(nn.Conv2d(3, c_stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_stem),
                         nn.ReLU(inplace=True), nn.Conv2d(c_stem, c_stem, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_stem))


class DartsNetwork(nn.Module):
    """NetworkCIFAR of ``genotype``: stem, ``layers`` cells, global pooling, optional linear head."""

    def __init__(self, genotype: Genotype, channels: int = 16, layers: int = 8, small_stem: bool = True,
                 num_classes: int = 0, auxiliary: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ConfigError(f"channels must be an even number >= 2 (FactorizedReduce halves it), got {channels}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ConfigError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        reductions = reduction_layers(layers)  # raises for fewer than 3 cells
        specs = genotype.cell_specs(layers)
        self.genotype, self.layers, self.auxiliary = genotype, layers, auxiliary
        self.drop_path_prob = drop_path_prob  # the rate at the end of training
        self.drop_path_rate = drop_path_prob  # the rate now; a trainer ramps it (DARTS: prob * epoch / epochs)
        c_stem = STEM_MULTIPLIER * channels
        self.stem = _stem(c_stem, small_stem)
        c_prev_prev, c_prev, c = c_stem, c_stem, channels
        self.cells, reduction_prev, out_dims = nn.ModuleList(), False, []
        self.aux_index, self.aux_channels = 2 * layers // 3, 0  # DARTS: the tower reads the second reduction cell
        for i, spec in enumerate(specs):
            reduction = i in reductions
            c = c * 2 if reduction else c
            cell = Cell(spec, genotype.steps, c_prev_prev, c_prev, c, reduction, reduction_prev)
            self.cells.append(cell)
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.multiplier * c, reduction
            out_dims.append(c_prev)
            if i == self.aux_index:
                self.aux_channels = c_prev
        r1, r2 = sorted(reductions)
        self.stage_ends = (r1 - 1, r2 - 1, layers - 1)  # the last cell of each stage
        self.stage_dims = tuple(out_dims[i] for i in self.stage_ends)
        self.feature_dim = c_prev
        self.reset_head(num_classes)

    def reset_head(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.aux_head = AuxiliaryHead(self.aux_channels, num_classes) if self.auxiliary and num_classes > 0 else None

    def _cells(self, x: torch.Tensor, last: int):
        """Yield (index, output) of cells 0..last."""
        s0 = s1 = self.stem(x)
        rate = self.drop_path_rate if self.training else 0.0
        for i, cell in enumerate(self.cells[:last + 1]):
            s0, s1 = s1, cell(s0, s1, rate)
            yield i, s1

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the stages in ``indices`` (0, 1, 2; negative count from the end)."""
        wanted = {self.stage_ends[i % 3]: i % 3 for i in indices}
        outputs = {wanted[i]: out for i, out in self._cells(x, max(wanted)) if i in wanted}
        return [outputs[i % 3] for i in indices]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled features (N, feature_dim), auxiliary logits (N, classes) in training with the tower, else None)."""
        aux, out = None, x
        for i, out in self._cells(x, self.layers - 1):
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(out)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_darts_net(genotype: dict | Genotype | None = None, **kwargs) -> DartsNetwork:
    """The registry's constructor: ``genotype`` as ``Genotype.to_dict()`` data (None: DARTS_V2)."""
    from vipr.nas.genotype import DARTS_V2, from_dict

    if genotype is None:
        genotype = DARTS_V2
    elif isinstance(genotype, dict):
        genotype = from_dict(genotype)
    return DartsNetwork(genotype, **kwargs)
