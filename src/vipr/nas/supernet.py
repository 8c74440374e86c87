"""The DARTS search network (one-shot supernet), parameterised for P-DARTS and PC-DARTS.

DARTS (Liu et al., arXiv 1806.09055), ``model_search.py``: a stem of 3C channels, ``layers``
cells with reductions at layers // 3 and 2 * layers // 3, each cell two inputs (1x1
ReLU-Conv-BN, or FactorizedReduce after a reduction), ``steps`` intermediate nodes fed by
every earlier node (14 edges for 4 nodes), output = concat of the intermediate nodes; global
average pool and a linear classifier. Every edge is a ``MixedOp``: the softmax(alpha)-weighted
sum of its candidate ops; pooling ops are followed by BatchNorm(affine=False).

The variants are settings, not copies (STYLE.md, "what to avoid" 4):

* ``partial_channels`` K (PC-DARTS, Xu et al., arXiv 1907.05737): the first C/K channels go
  through the ops, the rest bypass (2x2 max-pooled on stride-2 edges), then concat and
  ``channel_shuffle(groups=K)``.
* ``edge_normalization`` (PC-DARTS): one beta per edge; node = sum_j softmax(beta)_j * MixedOp_j,
  the softmax taken over the node's incoming edges.
* ``candidates_*`` (P-DARTS, Chen et al., arXiv 1904.12760): each edge its own op subset; alpha
  has one column per candidate, so every edge of a cell type keeps the same number of ops.
* ``skip_dropout`` (P-DARTS): Dropout after the identity skip_connect ops; ``set_skip_dropout``
  changes p per epoch.

The architecture weights (alphas_*, betas_*) are registered parameters, so they live in the
state_dict and in every checkpoint (DESIGN.md, principle 6). ``none`` contributes zeros: it is
never computed (its alpha still takes part in the softmax, so alpha's gradient is unchanged).

Speed on CPU (same function, checked in tests/nas/test_supernet.py and test_wide.py): in
training, cells with narrow ops (PC-DARTS) run the edges that leave the same states as one batch
of wide ops (vipr.nas.wide); otherwise each edge computes ReLU(x) once for its four conv ops
instead of once per op; depthwise convs use vipr.nas.fastconv (``fast_depthwise``); the
weighted sum accumulates in place (addcmul_). Channels-last is the runner's default, and
``channel_shuffle`` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.errors import ConfigError
from vipr.nas.fastconv import speed_up_depthwise
from vipr.nas.genotype import edge_list, reduction_layers
from vipr.nas.ops import PRIMITIVES, DilConv, FactorizedReduce, ReLUConvBN, SepConv, create_op
from vipr.nas.wide import WIDE_MAX_CHANNELS, channel_slice, plan_groups, run_group

Candidates = tuple[tuple[str, ...], ...]  # one op-name tuple per edge
ARCH_NAMES = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")


@dataclass(frozen=True)
class SupernetSpec:
    channels: int = 16  # C of the first cells; doubled at each reduction
    layers: int = 8
    num_classes: int = 10
    steps: int = 4  # intermediate nodes per cell
    stem_multiplier: int = 3  # stem has 3C channels (DARTS)
    partial_channels: int = 1  # K: 1 = all channels through the mixed op (DARTS)
    edge_normalization: bool = False
    skip_dropout: float = 0.0  # P-DARTS; > 0 inserts Dropout modules (p can change later)
    candidates_normal: Candidates | None = None  # None: all PRIMITIVES on every edge
    candidates_reduce: Candidates | None = None
    fast_depthwise: bool = True  # vipr.nas.fastconv: same function, faster CPU backward

    @property
    def num_edges(self) -> int:
        return len(edge_list(self.steps))

    def candidates(self, reduction: bool) -> Candidates:
        chosen = self.candidates_reduce if reduction else self.candidates_normal
        return chosen if chosen is not None else (PRIMITIVES,) * self.num_edges

    def check(self) -> None:
        """ConfigError for a spec that cannot be built, before any module is allocated."""
        reduction_layers(self.layers)  # >= 3 cells
        k = self.partial_channels
        if k < 1 or self.channels % k or (self.channels // k) % 2:
            raise ConfigError(f"channels {self.channels} must be divisible by partial_channels K={k} into an even "
                              f"number (C/K channels go through the ops); pick C a multiple of {2 * max(k, 1)}")
        for reduction in (False, True):
            cands = self.candidates(reduction)
            if len(cands) != self.num_edges or len({len(c) for c in cands}) != 1 or not cands[0]:
                raise ConfigError(f"candidates need {self.num_edges} edges with the same non-zero number of ops, "
                                  f"got {[len(c) for c in cands]}")
            for name in {n for c in cands for n in c}:
                create_op(name, 2, 1)  # unknown op -> ConfigError with a suggestion


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(N, C, H, W) -> (N, C, H, W) with channel c*groups+g taken from g*(C/groups)+c (ShuffleNet)."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):  # keep the layout: mixed layouts take slow kernels
        return shuffle_last(x.permute(0, 2, 3, 1), groups).permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def shuffle_last(x: Tensor, groups: int) -> Tensor:
    """``channel_shuffle`` on the last dim of an (N, H, W, C) tensor."""
    return x.unflatten(-1, (groups, -1)).transpose(-1, -2).flatten(-2)


class MixedOp(nn.Module):
    """One edge: sum_i w_i * op_i(x) over the candidates (``none`` skipped), PC-DARTS-aware."""

    def __init__(self, channels: int, stride: int, names: tuple[str, ...], k: int, skip_dropout: float):
        super().__init__()
        c = channels // k
        self.k, self.c, self.stride, self.names = k, c, stride, names
        self.index = [i for i, name in enumerate(names) if name != "none"]  # alpha column of each op
        self.ops = nn.ModuleList(self._build(names[i], c, stride, skip_dropout) for i in self.index)
        self.takes_relu = [names[i].startswith(("sep_conv", "dil_conv")) for i in self.index]
        self.bypass_pool = nn.MaxPool2d(2, 2) if (k > 1 and stride == 2) else None

    @staticmethod
    def _build(name: str, c: int, stride: int, skip_dropout: float) -> nn.Module:
        op = create_op(name, c, stride, affine=False)
        first = op[0] if isinstance(op, SepConv) else op
        if isinstance(first, DilConv) and isinstance(first[0], nn.ReLU):
            first[0] = nn.Identity()  # the edge computes ReLU(x) once for all its conv ops (forward)
        if "pool" in name:
            return nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
        if name == "skip_connect" and stride == 1 and skip_dropout > 0:
            return nn.Sequential(op, nn.Dropout(skip_dropout))
        return op

    def forward(self, x: Tensor, weights: list[Tensor], scale: Tensor | None = None) -> Tensor:
        """x: (N, C, H, W); weights: one 0-d tensor per candidate (softmax(alpha) row, already times
        ``scale``); scale: the edge weight (PC-DARTS beta) or None, applied here to the bypass."""
        xt = channel_slice(x, 0, self.c) if self.k > 1 else x
        xr = F.relu(xt) if any(self.takes_relu) else None
        out = None
        for i, op, relu in zip(self.index, self.ops, self.takes_relu):
            y = op(xr if relu else xt)
            out = y * weights[i] if out is None else out.addcmul_(y, weights[i])  # in place: fewer allocations
        if out is None:  # an edge whose only candidate is 'none'
            out = xt[:, :, ::self.stride, ::self.stride] * 0.0
        if self.k == 1:
            return out
        rest = channel_slice(x, self.c, x.shape[1])
        rest = self.bypass_pool(rest) if self.bypass_pool is not None else rest
        rest = rest * scale if scale is not None else rest
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)


class SearchCell(nn.Module):
    def __init__(self, spec: SupernetSpec, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.steps = reduction, spec.steps
        self.k, self.c = spec.partial_channels, c // spec.partial_channels  # c: channels through the ops
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        cands = spec.candidates(reduction)
        sources = [j for i in range(spec.steps) for j in range(2 + i)]
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1, cands[e], spec.partial_channels, spec.skip_dropout)
            for e, j in enumerate(sources))
        self.groups = plan_groups(self.edges, spec.steps, spec.fast_depthwise)  # module references only
        self.wide = self.c <= WIDE_MAX_CHANNELS  # batched edges in training (vipr.nas.wide); else per edge

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None) -> Tensor:
        """weights (E, n_ops): softmax(alpha), times softmax(beta) with edge normalisation;
        edge_weights (E,): softmax(beta) per node's inputs, or None. Beta is folded into the op
        weights (and the bypass): the edge output is never rescaled, so no full-size edge output
        is kept for backward (PC-DARTS memory)."""
        states = [self.pre0(s0), self.pre1(s1)]
        if self.training and self.wide:
            return self._forward_wide(states, weights, edge_weights)
        rows = [row.unbind() for row in weights.unbind()]
        edge_w = [None] * len(rows) if edge_weights is None else edge_weights.unbind()
        e = 0
        for _ in range(self.steps):
            node = None
            for h in states:
                y = self.edges[e](h, rows[e], edge_w[e])
                node = y if node is None else node + y
                e += 1
            states.append(node)
        return torch.cat(states[2:], dim=1)

    def _forward_wide(self, states: list[Tensor], weights: Tensor, edge_weights: Tensor | None) -> Tensor:
        """The same sums with the edges of each group batched (vipr.nas.wide), in training mode.

        Node sums are taken on (N, H, W, C) views: their gradients stay channels-last."""
        c, k = self.c, self.k
        op_sums: list[Tensor | None] = [None] * self.steps  # (N, H, W, c) per node
        rest_sums: list[Tensor | None] = [None] * self.steps  # (N, H, W, C - c) per node, PC-DARTS' bypass
        rest: dict[int, Tensor] = {}  # the bypassed channels of each source state
        for node, group in enumerate(self.groups):
            stride = 2 if self.reduction and group.sources[0] < 2 else 1
            out = run_group(group, states, weights, c, stride).permute(0, 2, 3, 1)
            targets = list(dict.fromkeys(group.targets))
            per_target = out.unflatten(-1, (len(targets), -1, c)).sum(-2)  # a target's edges are adjacent
            for i, t in enumerate(targets):
                op_sums[t] = per_target[..., i, :] if op_sums[t] is None else op_sums[t] + per_target[..., i, :]
            if k > 1:  # PC-DARTS: the channels that bypass the ops, times the edge weight
                for e, s, t in zip(group.edges, group.sources, group.targets):
                    if s not in rest:
                        bypass = channel_slice(states[s], c, states[s].shape[1])
                        rest[s] = (F.max_pool2d(bypass, 2, 2) if stride == 2 else bypass).permute(0, 2, 3, 1)
                    r = rest[s] if edge_weights is None else rest[s] * edge_weights[e]
                    rest_sums[t] = r if rest_sums[t] is None else rest_sums[t] + r
            # the group leaving node - 1 (or the cell inputs) completes node
            done = op_sums[node] if k == 1 else shuffle_last(torch.cat([op_sums[node], rest_sums[node]], -1), k)
            states.append(done.permute(0, 3, 1, 2))
        return torch.cat(states[2:], dim=1)


class Supernet(nn.Module):
    """DARTS search network; ``forward(x) -> logits``; alphas and betas are parameters."""

    def __init__(self, spec: SupernetSpec):
        spec.check()
        super().__init__()
        self.spec = spec
        c_curr = spec.stem_multiplier * spec.channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c = c_curr, c_curr, spec.channels
        self.cells = nn.ModuleList()
        reductions, reduction_prev = reduction_layers(spec.layers), False
        for i in range(spec.layers):
            reduction = i in reductions
            c = c * 2 if reduction else c
            self.cells.append(SearchCell(spec, c_pp, c_p, c, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, spec.steps * c, reduction
        self.classifier = nn.Linear(c_p, spec.num_classes)
        if spec.fast_depthwise:
            speed_up_depthwise(self.cells)
        n_ops = (len(spec.candidates(False)[0]), len(spec.candidates(True)[0]))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(spec.num_edges, n_ops[0]))  # DARTS init
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(spec.num_edges, n_ops[1]))
        if spec.edge_normalization:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(spec.num_edges))  # PC-DARTS init
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(spec.num_edges))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n in ARCH_NAMES]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n not in ARCH_NAMES]

    def op_weights(self, reduction: bool) -> Tensor:
        """softmax(alpha) over each edge's candidates, (E, n_ops)."""
        return F.softmax(self.alphas_reduce if reduction else self.alphas_normal, dim=-1)

    def edge_weights(self, reduction: bool) -> Tensor | None:
        """PC-DARTS edge normalisation: softmax(beta) over each node's incoming edges, (E,); None when off."""
        if not self.spec.edge_normalization:
            return None
        betas = self.betas_reduce if reduction else self.betas_normal
        sizes = [2 + i for i in range(self.spec.steps)]
        return torch.cat([F.softmax(b, dim=-1) for b in betas.split(sizes)])

    def set_skip_dropout(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p

    def forward(self, x: Tensor) -> Tensor:
        weights, edge_w = {}, {}  # once per forward, shared by all cells of a type
        for r in (False, True):
            w, edge_w[r] = self.op_weights(r), self.edge_weights(r)
            weights[r] = w if edge_w[r] is None else w * edge_w[r][:, None]  # softmax(alpha) * softmax(beta)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights[cell.reduction], edge_w[cell.reduction])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
