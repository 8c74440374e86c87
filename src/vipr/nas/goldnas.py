"""GOLD-NAS: gradual, one-level, differentiable search with a variable resource constraint.

Bi et al., "GOLD-NAS: Gradual, One-Level, Differentiable" (arXiv 2007.03331). No official
code exists; the rules below are those of the unofficial implementation (docs/algorithms.md#goldnas):

* space (:mod:`vipr.nas.goldnas_space`): ops {skip_connect, sep_conv_3x3}, per-cell sigmoid
  gates, every earlier node an input, all nodes concatenated;
* one level: each batch updates the weights (SGD, DARTS' search values) and alpha (SGD lr 1,
  momentum 0.9) from the same loss ``CE + lambda * penalty``;
* :func:`resource_penalty`: sum over live ops of log(1 + n w / sum w) * FLOPs(op), the sum
  and n (live inputs) over the op's node; FLOPs in millions of multiply-adds (a choice: it
  puts the penalty on the scale of the loss at lambda ~ 1e-2 for a C=16 network);
* :func:`select_prunes` after each epoch: every op whose node-normalised weight is <= eta_min,
  and the n0 weakest more that are <= eta_max; a node's last live input is never pruned
  (a choice, so every node, and the all-nodes concat, stays defined);
* :func:`update_lambda`: an epoch pruning >= n0 ops divides lambda by c0 and resets the step;
  otherwise the step doubles and lambda grows by the doubled step (our reading of "the step
  doubles and lambda grows by it");
* stop when the live ops' FLOPs fall to ``flops_floor_ratio`` of the full space's;
* the architecture is recorded (``genotypes()``) each time pruning resumes after quiet
  epochs: the architecture that survived those epochs, one point of the accuracy/FLOPs
  front; the final one is added at the end. ``write_front`` saves the series as
  OUT/genotypes/NNN.json and OUT/front.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.config import BELOW_ONE, GRAD_CLIP, LR, PROB, SEARCH_EPOCHS, WEIGHT_DECAY, Range
from vipr.engine.device import precision_autocast
from vipr.errors import ConfigError
from vipr.fsutil import atomic_write_text
from vipr.nas.config import StrategySettings
from vipr.nas.flops import count_flops, count_params
from vipr.nas.genotype import Genotype, from_dict
from vipr.nas.genotype import edge_list
from vipr.nas.goldnas_space import GoldSupernet
from vipr.nas.network import DartsNetwork
from vipr.nas.ops import create_op
from vipr.nas.strategy import LabelledViews, SearchContext, register_strategy

MFLOPS = 1e6  # the penalty's FLOPs unit


@dataclass(frozen=True)
class GoldNasSettings(StrategySettings):
    name: str = "goldnas"
    epochs: Annotated[int, SEARCH_EPOCHS] = 50  # at most; the search stops earlier at the FLOPs floor
    ops: tuple[str, ...] = ("skip_connect", "sep_conv_3x3")
    alpha_init: Annotated[float, Range(-100, 100)] = 0.0  # every gate starts at sigmoid(0) = 0.5
    alpha_lr: Annotated[float, LR] = 1.0
    alpha_momentum: Annotated[float, PROB] = 0.9
    lr: Annotated[float, LR] = 0.025  # weights, constant: the search length is not known in advance
    momentum: Annotated[float, PROB] = 0.9
    weight_decay: Annotated[float, WEIGHT_DECAY] = 3e-4
    grad_clip: Annotated[float, GRAD_CLIP] = 5.0  # max L2 norm of the weight gradients
    eta_min: Annotated[float, BELOW_ONE] = 0.01  # prune every op whose node-normalised weight is <= this
    eta_max: Annotated[float, BELOW_ONE] = 0.05  # ... and up to n0 more that are <= this
    n0: Annotated[int, Range(0, 10**4)] = 4
    c0: Annotated[float, Range(1, 10**3, low_open=True)] = 2.0  # lambda /= c0 after an epoch that pruned >= n0 ops
    lambda_step: Annotated[float, Range(0, 1, low_open=True)] = 1e-5  # first (and reset) increment of lambda
    flops_floor_ratio: Annotated[float, BELOW_ONE] = 0.1  # stop when live-op FLOPs <= this share of the full space's

    def validate(self, config) -> None:
        for name in self.ops:
            create_op(name, 2, 1)  # unknown op -> ConfigError naming the closest one
        if not self.ops or "none" in self.ops:
            raise ConfigError(f"strategy.ops must name at least one op other than 'none', got {list(self.ops)}")
        if not 0 <= self.eta_min <= self.eta_max < 1 or self.n0 < 0 or self.c0 <= 1 or self.lambda_step <= 0:
            raise ConfigError("need 0 <= eta_min <= eta_max < 1, n0 >= 0, c0 > 1 and lambda_step > 0; got "
                              f"{self.eta_min}, {self.eta_max}, {self.n0}, {self.c0}, {self.lambda_step}")
        if not 0 <= self.flops_floor_ratio < 1:
            raise ConfigError(f"strategy.flops_floor_ratio must be in [0, 1), got {self.flops_floor_ratio}")


# ---- the rules, as pure functions --------------------------------------------------------------
def node_index(steps: int, num_ops: int) -> Tensor:
    """(E, O) int: the target node of every (edge, op) of a cell."""
    return torch.tensor([j for _, j in edge_list(steps)])[:, None].expand(-1, num_ops)


def per_node_sum(x: Tensor, nodes: Tensor) -> Tensor:
    """(..., E, O) -> (..., E, O): at every (edge, op), the sum of ``x`` over its target node's
    (edge, op) entries; one matmul with the same-node matrix, no loop or host sync per node."""
    target = nodes[:, :1].to(x.device)  # (E, 1): every op of an edge feeds the same node
    same = (target == target.T).to(x.dtype)  # (E, E)
    return (x.sum(-1) @ same)[..., None].expand_as(x)


def node_normalised(weights: Tensor, live: Tensor, nodes: Tensor) -> Tensor:
    """Each live weight divided by the sum of the live weights into its node (0 where pruned).

    Args:
        weights: (..., E, O) sigmoid gates; live: same shape, bool; nodes: (E, O) target node ids.
    """
    w = weights * live
    return torch.where(live, w / per_node_sum(w, nodes).clamp_min(1e-12), torch.zeros_like(w))


def resource_penalty(weights: Tensor, live: Tensor, nodes: Tensor, flops: Tensor) -> Tensor:
    """sum over live ops of log(1 + n * w / sum w) * FLOPs(op); n, sum over the op's node's live inputs.

    Args:
        weights: (..., E, O) sigmoid gates; live: bool, same shape; nodes: (E, O); flops: same shape as weights.
    """
    counts = per_node_sum(live.to(weights.dtype), nodes)
    share = node_normalised(weights, live, nodes)  # w / sum w
    return (torch.log1p(counts * share) * flops * live).sum()


def select_prunes(normalised: Tensor, live: Tensor, groups: Tensor, eta_min: float, eta_max: float,
                  n0: int) -> list[int]:
    """Flat indices to prune: all live <= eta_min, then up to ``n0`` weakest live <= eta_max.

    Args:
        normalised, live, groups: flat (K,) node-normalised weights, liveness, and a node id per
            entry (unique over the whole network); a node's last live input is never selected.
    """
    alive: dict[int, int] = {}  # node -> live inputs
    for g in groups[live].tolist():
        alive[g] = alive.get(g, 0) + 1
    chosen, extra = [], 0
    for k in torch.argsort(normalised).tolist():  # weakest first
        w, g = float(normalised[k]), int(groups[k])
        if not live[k] or w > eta_max or alive[g] <= 1:
            continue
        if w <= eta_min or extra < n0:
            extra += w > eta_min
            chosen.append(k)
            alive[g] -= 1
    return sorted(chosen)


def update_lambda(lam: float, step: float, pruned: int, n0: int, c0: float, base_step: float) -> tuple[float, float]:
    """(lambda, step) after an epoch that pruned ``pruned`` ops."""
    if pruned >= n0:
        return lam / c0, base_step
    step = 2 * step
    return lam + step, step


# ---- the strategy ------------------------------------------------------------------------------
@register_strategy("goldnas", GoldNasSettings)
class GoldNas:
    """One-level search with gradual pruning; see the module docstring for the rules."""

    uses_val_split = False  # alpha and weights learn from the same batch

    def __init__(self, context: SearchContext):
        s, net_cfg = context.settings, context.config.network
        self.settings, self.device, self.precision = s, context.device, context.precision
        self.provenance, self.image_size = dict(context.provenance), context.config.data.image_size
        self.num_classes = context.num_classes
        self.net = GoldSupernet(net_cfg.channels, net_cfg.layers, context.num_classes, s.ops, net_cfg.steps,
                                s.alpha_init).to(context.device)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=s.lr, momentum=s.momentum,
                                     weight_decay=s.weight_decay)
        self.a_opt = torch.optim.SGD([self.net.alphas], lr=s.alpha_lr, momentum=s.alpha_momentum)
        self.nodes = node_index(net_cfg.steps, len(s.ops)).to(context.device)  # (E, O)
        self.flops = (self.net.op_flops_table(self.image_size) / MFLOPS).float().to(context.device)  # (L, E, O)
        self.full_flops = float(self.flops.sum())
        self.lam, self.lam_step, self.quiet, self.epoch = 0.0, s.lambda_step, 0, 0
        self.series: list[dict] = []  # Genotype.to_dict() of each recorded architecture
        self._acc = [0.0, 0]  # (correct, seen) this epoch
        self._costs: dict[bytes, tuple[int, int]] = {}  # live mask -> (FLOPs, params) of its network

    @property
    def total_epochs(self) -> int:
        return self.settings.epochs

    def begin_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # the same epoch again: a run resumed mid-epoch keeps its counts
            self.epoch, self._acc = epoch, [0.0, 0]

    def arch_active(self, epoch: int) -> bool:
        return False  # one level: weight_step updates alpha too

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"weights": self.w_opt, "alpha": self.a_opt}

    def learning_rates(self, epoch: int) -> dict[str, float]:
        return {}  # constant: the search length is not known in advance

    def arch_step(self, train: LabelledViews, val: LabelledViews | None) -> dict[str, float]:
        return {}

    def weight_step(self, train: LabelledViews) -> dict[str, float]:
        images, labels = train
        self.net.train()
        with precision_autocast(self.device, self.precision):
            logits = self.net(images).float()  # (B, classes)
        ce = F.cross_entropy(logits, labels)
        with torch.autocast(self.device.type, enabled=False):  # float32 at any precision (it has a matmul)
            penalty = resource_penalty(torch.sigmoid(self.net.alphas), self.net.live, self.nodes, self.flops)
        loss = ce + self.lam * penalty
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.settings.grad_clip)
        self.w_opt.step()
        self.a_opt.step()
        correct = float((logits.argmax(1) == labels).sum())
        self._acc = [self._acc[0] + correct, self._acc[1] + len(labels)]
        return {"loss": loss.item(), "ce": ce.item(), "penalty": penalty.item(), "acc": correct / len(labels)}

    def live_flops(self) -> float:
        """Millions of multiply-adds of the live ops."""
        return float((self.flops * self.net.live).sum())

    def end_epoch(self, epoch: int) -> dict:
        """Prune, record the architecture if pruning resumes after quiet epochs, move lambda."""
        s, live = self.settings, self.net.live
        with torch.no_grad():
            share = node_normalised(torch.sigmoid(self.net.alphas), live, self.nodes)  # (L, E, O)
        groups = torch.arange(live.shape[0], device=live.device)[:, None, None] * 1000 + self.nodes  # unique node ids
        chosen = select_prunes(share.flatten().cpu(), live.flatten().cpu(), groups.flatten().cpu(),
                               s.eta_min, s.eta_max, s.n0)
        if chosen and self.quiet > 0:
            kept = self.genotype().to_dict()  # the architecture the quiet epochs kept, last scored after epoch `epoch`
            self.series.append({**kept, "provenance": {**kept["provenance"], "scored_epoch": epoch}})
        flat = live.view(-1)
        flat[chosen] = False
        self.quiet = 0 if chosen else self.quiet + 1
        self.lam, self.lam_step = update_lambda(self.lam, self.lam_step, len(chosen), s.n0, s.c0, s.lambda_step)
        return {"pruned": len(chosen), "live_ops": int(live.sum()), "live_mflops": self.live_flops(),
                "lambda": self.lam, "train_acc": self.train_acc()}

    def train_acc(self) -> float:
        """Top-1 of this epoch's weight steps, a fraction (as the runner's val_acc)."""
        return self._acc[0] / max(self._acc[1], 1)

    def done(self) -> bool:
        return self.live_flops() <= self.settings.flops_floor_ratio * self.full_flops

    def genotype(self) -> Genotype:
        """The live architecture, with the cost of the evaluation network it defines at the search's size."""
        genotype = self.net.genotype()
        flops, params = self._cost(genotype)
        provenance = {**self.provenance, "strategy": "goldnas", "epoch": self.epoch + 1, "lambda": self.lam,
                      "live_ops": int(self.net.live.sum()), "search_mflops": self.live_flops(), "flops": flops,
                      "params": params, "channels": self.net.channels, "layers": self.net.layers,
                      "image_size": self.image_size, "train_acc": self.train_acc()}
        return Genotype(genotype.normal, genotype.reduce, genotype.steps, genotype.cells, provenance)

    def _cost(self, genotype: Genotype) -> tuple[int, int]:
        """(FLOPs, params) of the genotype's network, cached: the runner asks every epoch, pruning is rare."""
        key = bytes(self.net.live.flatten().cpu().numpy())
        if key not in self._costs:
            network = DartsNetwork(genotype, self.net.channels, self.net.layers, num_classes=self.num_classes)
            self._costs[key] = (count_flops(network, self.image_size), count_params(network))
        return self._costs[key]

    def genotypes(self) -> list[Genotype]:
        """The recorded series, then the current architecture (if it differs from the last recorded)."""
        series = [from_dict(d) for d in self.series]
        current = self.genotype()
        current.provenance["scored_epoch"] = self.epoch + 1  # 1-based: the runner's val acc of the last epoch
        if not series or series[-1].cells != current.cells:
            series.append(current)
        return series

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        self.net.eval()
        with precision_autocast(self.device, self.precision):
            return self.net(images).float()

    def state_dict(self) -> dict:
        """Everything but the optimizers (the engine saves those: ``optimizers``)."""
        return {"net": self.net.state_dict(), "lam": self.lam, "lam_step": self.lam_step, "quiet": self.quiet, "series": list(self.series),
                "acc": list(self._acc), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.lam, self.lam_step, self.quiet = state["lam"], state["lam_step"], state["quiet"]
        self.series, self._acc, self.epoch = list(state["series"]), list(state["acc"]), state["epoch"]

    def write_outputs(self, out_dir: str | Path) -> list[Path]:
        """OUT/genotypes/NNN.json (one per architecture of the series) and OUT/front.json.

        Each gets ``val_acc``: the runner's supernet accuracy (OUT/metrics.jsonl) after the last
        epoch in which the architecture was the live one (``scored_epoch``)."""
        log = Path(out_dir) / "metrics.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
        val_acc = {r["epoch"]: r["val_acc"] for r in records if r.get("val_acc") is not None and "epoch" in r}
        series = self.genotypes()
        for g in series:
            if g.provenance.get("scored_epoch") in val_acc:
                g.provenance["val_acc"] = val_acc[g.provenance["scored_epoch"]]
        return write_front(series, out_dir)


def write_front(series: list[Genotype], out_dir: str | Path) -> list[Path]:
    """Save a series of genotypes as OUT/genotypes/000.json ... and OUT/front.json (flops, params, accuracy)."""
    out = Path(out_dir)
    paths = [g.save(out / "genotypes" / f"{i:03d}.json") for i, g in enumerate(series)]
    keys = ("epoch", "scored_epoch", "flops", "params", "val_acc", "train_acc", "live_ops", "lambda")
    front = [{"genotype": str(p.relative_to(out)), **{k: g.provenance[k] for k in keys if k in g.provenance}}
             for p, g in zip(paths, series)]
    atomic_write_text(out / "front.json", json.dumps(front, indent=2) + "\n")
    return paths
