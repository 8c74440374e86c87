"""The search-strategy interface and registry: ``register_strategy``, ``create_strategy``, ``list_strategies``.

A strategy is one file (darts.py, pdarts.py, pcdarts.py, goldnas.py) holding a frozen
settings dataclass (a subclass of ``vipr.nas.config.StrategySettings``) and a class that
follows the ``Strategy`` protocol below. The search runs in vipr's one training loop
(vipr.engine.trainer.Trainer, through the task of vipr.nas.search_task), which owns the
loop, data order, augmentation draws, progress, metrics, checkpoints (the optimizers
included), signals, resume and the learning-rate schedule (``learning_rates``); a strategy
owns its supernet, its optimizers and how alpha and weights are updated. Adding one::

    @register_strategy("mine", MySettings)     # MySettings(StrategySettings), frozen
    class MyStrategy:
        uses_val_split = True                  # bilevel: alpha learns on the held-out split
        def __init__(self, context: SearchContext): ...

The engine drives it like this (``epoch`` counts from 0 over ``total_epochs`` and is
global: P-DARTS maps it to (stage, epoch in stage) itself)::

    strategy = create_strategy(context)           # builds supernet + optimizers, no data yet
    if resuming:
        strategy.load_state_dict(saved)            # P-DARTS rebuilds the stage's supernet here
        for name, opt in strategy.optimizers().items(): opt.load_state_dict(saved_optimizers[name])
    for epoch in range(start, strategy.total_epochs):
        if strategy.done(): break                  # early stop (GOLD-NAS: FLOPs floor), also on resume
        strategy.begin_epoch(epoch)                # dropout p, per-epoch counters
        set every param group's lr: strategy.learning_rates(epoch)   # {"weights": DARTS' cosine}
        for train, val in batches:                 # each (images float NCHW normalised, labels)
            if strategy.arch_active(epoch):        # False during warm-up
                strategy.arch_step(train, val)     # alpha update (val is None if not uses_val_split)
            strategy.weight_step(train)            # weight update
        strategy.end_epoch(epoch)                  # -> dict of JSON-able metrics (pruning happens here)
        strategy.genotype()                        # logged per epoch; the final one -> genotype.json
    strategy.genotypes()                           # the series (GOLD-NAS' Pareto front) -> genotypes.json

A one-level method (GOLD-NAS: alpha and weights on the same batch) sets
``uses_val_split = False`` (the runner then gives all train images to weight batches and
passes ``val=None``), returns False from ``arch_active`` and updates both in ``weight_step``.
Step methods return a dict of float metrics (``loss`` at least; ``acc`` if known).
``predict(images) -> logits`` (no grad, eval mode) scores the held-out split for "val acc".
``optimizers()`` names the current optimizers (``weights``, ``alpha``; P-DARTS' change with
the stage); ``state_dict()`` holds everything else to resume exactly (supernet incl. alpha,
stage, pruning state); the engine adds the optimizers, RNG states and the step counter. Optional:
``write_outputs(out_dir) -> list[Path]`` writes extra files at the end (GOLD-NAS' front).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from vipr.config import register_variant, suggest
from vipr.errors import ConfigError
from vipr.nas.config import SearchConfig, StrategySettings
from vipr.nas.genotype import Genotype

LabelledViews = tuple[Tensor, Tensor]  # images (B, 3, S, S) float normalised on the device, labels (B,) int64

# Modules that register the built-in strategies when imported.
BUILTIN_MODULES = ("vipr.nas.darts", "vipr.nas.pdarts", "vipr.nas.pcdarts", "vipr.nas.goldnas")


@dataclass
class SearchContext:
    """What a strategy is built from: the resolved config and facts the runner found."""

    config: SearchConfig  # config.strategy is the strategy's own settings instance
    num_classes: int
    steps_per_epoch: int  # weight steps per epoch (the runner's loader length)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # resolved: bf16 | fp16 | fp32 (use vipr.engine.device.precision_autocast)
    provenance: dict = field(default_factory=dict)  # strategy, dataset, data_digest, seed, ... for genotypes

    @property
    def settings(self) -> StrategySettings:
        return self.config.strategy


@runtime_checkable
class Strategy(Protocol):
    uses_val_split: bool

    @property
    def total_epochs(self) -> int: ...
    def begin_epoch(self, epoch: int) -> None: ...
    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def learning_rates(self, epoch: int) -> dict[str, float]: ...
    def arch_active(self, epoch: int) -> bool: ...
    def arch_step(self, train: LabelledViews, val: LabelledViews | None) -> dict[str, float]: ...
    def weight_step(self, train: LabelledViews) -> dict[str, float]: ...
    def end_epoch(self, epoch: int) -> dict: ...
    def done(self) -> bool: ...
    def genotype(self) -> Genotype: ...
    def genotypes(self) -> list[Genotype]: ...
    def predict(self, images: Tensor) -> Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


_STRATEGIES: dict[str, Callable[[SearchContext], Strategy]] = {}


def register_strategy(name: str, settings: type[StrategySettings]):
    """Class decorator: register a strategy under ``name`` with its typed settings class."""
    if not issubclass(settings, StrategySettings):
        raise TypeError(f"settings for strategy '{name}' must subclass StrategySettings")

    def wrap(cls):
        register_variant(StrategySettings, name)(settings)
        _STRATEGIES[name] = cls
        return cls

    return wrap


def load_builtin() -> None:
    """Import the modules that register the built-in strategies (idempotent)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_strategies() -> list[str]:
    load_builtin()
    return sorted(_STRATEGIES)


def check_strategy(name: str) -> None:
    if name not in list_strategies():
        raise ConfigError(f"unknown strategy '{name}'{suggest(name, _STRATEGIES)}")


def strategy_class(name: str) -> Callable[[SearchContext], Strategy]:
    """The registered class (read ``uses_val_split`` from it before building)."""
    check_strategy(name)
    return _STRATEGIES[name]


def create_strategy(context: SearchContext) -> Strategy:
    """Build the strategy named by ``context.config.strategy.name``."""
    return strategy_class(context.settings.name)(context)
