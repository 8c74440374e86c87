"""Wide edges: a search cell's edges that leave the same states, run as one batch of ops.

Why: PC-DARTS puts only C/K channels through each op (4 at C = 16, K = 4), and CPU kernels on
4 channels cost mostly per call. Measured on the 2-core CPU, (64, C, 32, 32) channels-last,
forward + backward: BatchNorm 8 x C=4 18.5 ms against 1 x C=32 3.4 ms; 3x3 max-pool 12.7 ms
against 4.2 ms. In a DARTS cell the 2 * steps edges leaving the two cell inputs are ready at
once, then those leaving node 0, node 1, ... (``edge_groups``). For each group and op:

* sep_conv / dil_conv: the edges' inputs side by side along channels go through one depthwise
  conv (the edges' kernels concatenated), one block-diagonal pointwise matmul and one
  BatchNorm. BatchNorm's statistics are per channel, so this is the per-edge function; each
  edge's running statistics follow its own channels;
* max_pool / avg_pool: parameter free and followed by affine-free BatchNorm, so in training
  every edge leaving one state computes the same tensor: once per state, both pools of all
  the group's states in one BatchNorm call;
* skip_connect at stride 1: the edge's input (P-DARTS' dropout drawn per edge);
* anything else (the stride-2 skip_connect, a FactorizedReduce): per edge, then side by side.

Only worth it for narrow ops: at C = 16 (DARTS) the wide BatchNorm and the block-diagonal
pointwise cost more than per-edge calls (DARTS weight step 2.5 -> 4.9 s at C = 16, 8 cells,
batch 64), so cells use it up to ``WIDE_MAX_CHANNELS`` channels per op (PC-DARTS, K = 4:
weight step 1.9 -> 1.2 s, architecture step 1.7 -> 1.1 s; a limit of 16 measures the same).
Training mode only; eval mode keeps the per-edge ``MixedOp`` path, which reads each edge's
own running statistics. tests/nas/test_wide.py checks both paths give the same outputs,
gradients and running statistics (float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.nas.fastconv import depthwise_conv

WIDE_MAX_CHANNELS = 8  # channels through each op (C/K); wider cells run per edge
POOLS = ("max_pool_3x3", "avg_pool_3x3")


@dataclass
class WideOp:
    """One op name over the group's edges that have it among their candidates."""

    name: str
    positions: list[int]  # places in the group (edge order) whose edge has this op
    modules: list[nn.Module]  # that edge's op module, per position
    rows: list[int]  # alpha row (edge index) per position
    cols: list[int]  # alpha column (the op's place in that edge's candidates) per position


@dataclass
class EdgeGroup:
    edges: list[int] = field(default_factory=list)  # edge indices (alpha rows), in order
    sources: list[int] = field(default_factory=list)  # input state per edge: 0, 1 cell inputs, 2 + i node i
    targets: list[int] = field(default_factory=list)  # node fed by each edge
    ops: list[WideOp] = field(default_factory=list)
    fast_depthwise: bool = True  # vipr.nas.fastconv for the depthwise convs, as the per-edge ops


def edge_groups(steps: int) -> list[EdgeGroup]:
    """Group g holds the edges computable once node g - 1 exists: group 0 those leaving s0 and s1."""
    groups = [EdgeGroup() for _ in range(steps)]
    e = 0
    for node in range(steps):
        for source in range(2 + node):
            group = groups[max(source - 1, 0)]
            group.edges.append(e)
            group.sources.append(source)
            group.targets.append(node)
            e += 1
    return groups


def plan_groups(edges: nn.ModuleList, steps: int, fast_depthwise: bool = True) -> list[EdgeGroup]:
    """``edge_groups`` with each group's ops resolved to the edges' MixedOp modules."""
    groups = edge_groups(steps)
    for group in groups:
        group.fast_depthwise = fast_depthwise
        by_name: dict[str, WideOp] = {}
        for position, e in enumerate(group.edges):
            mixed = edges[e]
            for col, module in zip(mixed.index, mixed.ops):
                name = mixed.names[col]
                op = by_name.setdefault(name, WideOp(name, [], [], [], []))
                op.positions.append(position)
                op.modules.append(module)
                op.rows.append(e)
                op.cols.append(col)
        group.ops = list(by_name.values())
    return groups


def run_group(group: EdgeGroup, states: list[Tensor], weights: Tensor, c: int, stride: int) -> Tensor:
    """(N, c * len(group.edges), H / stride, W / stride): each edge's weighted op sum, side by side.

    ``weights`` (E, n_ops) holds softmax(alpha) (times the PC-DARTS edge weight); ``c`` channels
    of each input go through the ops (the first C/K)."""
    inputs = {s: channel_slice(states[s], 0, c) for s in set(group.sources)}
    relu_cache: dict[tuple[int, ...], Tensor] = {}
    pooled = _pools(group, inputs)
    out = None
    for op in group.ops:
        sources = [group.sources[p] for p in op.positions]
        if op.name in POOLS:
            y = torch.cat([pooled[op.name, s] for s in sources], 1)
        else:
            y = _op_output(op, sources, inputs, relu_cache, stride, group.fast_depthwise)
        w = weights[op.rows, op.cols].repeat_interleave(c).view(1, -1, 1, 1)  # per output channel
        if len(op.positions) == len(group.edges):
            out = y * w if out is None else out.addcmul_(y, w)  # in place: fewer allocations
            continue
        if out is None:  # P-DARTS: this op is a candidate of only some edges
            out = y.new_zeros(y.shape[0], c * len(group.edges), *y.shape[2:])
        channels = torch.tensor([p * c + i for p in op.positions for i in range(c)], device=y.device)
        out = out.index_add(1, channels, y * w)
    if out is None:  # every edge's only candidate is 'none'
        x = states[group.sources[0]]
        out = x.new_zeros(x.shape[0], c * len(group.edges), -(-x.shape[2] // stride), -(-x.shape[3] // stride))
    return out


def _op_output(op: WideOp, sources: list[int], inputs: dict[int, Tensor], relu_cache: dict, stride: int,
               fast: bool) -> Tensor:
    name = op.name
    if name == "skip_connect" and stride == 1:
        y = torch.cat([inputs[s] for s in sources], 1)
        p = op.modules[0][1].p if isinstance(op.modules[0], nn.Sequential) else 0.0  # P-DARTS' skip dropout
        return F.dropout(y, p) if p > 0 else y
    if name.startswith(("sep_conv", "dil_conv")):
        key = tuple(sources)
        if key not in relu_cache:  # ReLU(x) once for every conv op of the group
            relu_cache[key] = F.relu(torch.cat([inputs[s] for s in sources], 1))
        x = relu_cache[key]
        if name.startswith("dil_conv"):
            return _dil_block(x, op.modules, stride, 2, fast)
        x = _dil_block(x, [m[0] for m in op.modules], stride, 1, fast)
        return _dil_block(F.relu(x), [m[1] for m in op.modules], 1, 1, fast)
    return torch.cat([m(inputs[s]) for m, s in zip(op.modules, sources)], 1)


def _dil_block(x: Tensor, blocks: list[nn.Module], stride: int, dilation: int, fast: bool) -> Tensor:
    """Wide ``DilConv`` without its ReLU: depthwise, pointwise, BatchNorm (vipr.nas.ops)."""
    kernels = torch.cat([b[1].weight for b in blocks])
    if fast:
        x = depthwise_conv(x, kernels, stride, dilation)
    else:
        x = F.conv2d(x, kernels, None, stride, dilation * (kernels.shape[-1] // 2), dilation, len(kernels))
    x = pointwise(x, [b[2].weight for b in blocks])
    return batch_norm(x, [[b[3]] for b in blocks])


def _pools(group: EdgeGroup, inputs: dict[int, Tensor]) -> dict[tuple[str, int], Tensor]:
    """BatchNorm(pool(x)) per (pool op, source state): computed once, with one BatchNorm call for all;
    every edge's BatchNorm keeps the statistics of its (op, source) channels."""
    ops = [op for op in group.ops if op.name in POOLS]
    if not ops:
        return {}
    sources = list(dict.fromkeys(group.sources))
    x = torch.cat([inputs[s] for s in sources], 1)
    keys, slots = [], []
    for op in ops:
        op_sources = [group.sources[p] for p in op.positions]
        for s in sources:
            keys.append((op.name, s))
            slots.append([m[1] for m, src in zip(op.modules, op_sources) if src == s])
    y = batch_norm(torch.cat([op.modules[0][0](x) for op in ops], 1), slots)  # modules[0][0]: the pool
    return dict(zip(keys, y.split(x.shape[1] // len(sources), 1)))


def channel_slice(x: Tensor, start: int, stop: int) -> Tensor:
    """``x[:, start:stop]``, sliced through the (N, H, W, C) view: the same tensor, but its gradient
    is channels-last (slicing dim 1 directly back-propagates through a zero-filled NCHW tensor,
    and BatchNorm's backward on mixed layouts is 3x slower)."""
    return x.permute(0, 2, 3, 1)[..., start:stop].permute(0, 3, 1, 2)


def pointwise(x: Tensor, weights: list[Tensor]) -> Tensor:
    """The 1x1 convs of several edges at once: (N, sum c_in, H, W) -> (N, sum c_out, H, W).

    One matmul with the block-diagonal weight, on the channels-last layout (a free view)."""
    w = torch.block_diag(*(weight.flatten(1) for weight in weights))  # (sum c_out, sum c_in)
    n, _, h, width = x.shape
    y = x.permute(0, 2, 3, 1).reshape(-1, w.shape[1]) @ w.t()
    return y.view(n, h, width, -1).permute(0, 3, 1, 2)


def batch_norm(x: Tensor, slots: list[list[nn.BatchNorm2d]]) -> Tensor:
    """Training-mode affine-free BatchNorm of x, whose channels are ``len(slots)`` equal slices;
    the modules of slots[i] keep the running statistics of slice i (several when edges share it)."""
    mean, var = x.new_zeros(x.shape[1]), x.new_ones(x.shape[1])
    eps = next(bn.eps for bns in slots for bn in bns)
    y = F.batch_norm(x, mean, var, None, None, True, 1.0, eps)  # momentum 1: mean, var := the batch's
    c = x.shape[1] // len(slots)
    with torch.no_grad():
        for i, bns in enumerate(slots):
            for bn in bns:
                bn.running_mean.lerp_(mean[i * c:(i + 1) * c], bn.momentum)  # = (1 - m) * running + m * batch
                bn.running_var.lerp_(var[i * c:(i + 1) * c], bn.momentum)
                bn.num_batches_tracked.add_(1)
    return y
