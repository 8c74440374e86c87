"""Typed settings of an architecture search: the shared sections and the strategy base.

``SearchConfig`` is what ``vipr nas search`` resolves and writes as ``config.yaml``. Its
``strategy`` section is polymorphic (vipr.config.register_variant): ``strategy.name`` picks
the settings class a strategy registered with ``register_strategy`` (vipr.nas.strategy),
so ``--set strategy.order=2`` is checked against DARTS' own typed fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from vipr.config import (BATCH, CELLS, COUNT_OR_OFF, DEVICE, EPOCHS, FRACTION, PRECISION, SEARCH_EPOCHS, SEED,
                         SIDE_PX, THREADS, Range)
from vipr.errors import ConfigError


@dataclass(frozen=True)
class StrategySettings:
    """Fields every strategy has; a strategy subclasses this with its own (frozen) fields.

    ``epochs`` and ``warmup_epochs`` live here rather than in ``train`` because their
    defaults differ per method (DARTS 50/0, P-DARTS 25/10 per stage, PC-DARTS 50/15).
    """

    name: str = "darts"
    epochs: Annotated[int, SEARCH_EPOCHS] = 50  # passes over the weight half of the data (P-DARTS: per stage)
    warmup_epochs: Annotated[int, EPOCHS] = 0  # leading epochs that train weights only (no architecture step)

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs <= epochs, got epochs={self.epochs}, "
                             f"warmup_epochs={self.warmup_epochs}")

    def validate(self, config: "SearchConfig") -> None:
        """Cross-section checks (e.g. channels divisible by K); raise ConfigError naming the fix."""


@dataclass(frozen=True)
class DataSection:
    source: str = "builtin:shapes"
    image_size: Annotated[int, SIDE_PX] = 32  # side of the random crops fed to the supernet, px
    train_portion: Annotated[float, FRACTION] = 0.5  # share of the train split for weights; the rest trains alpha (DARTS: 0.5)
    store_size: Annotated[int | None, SIDE_PX] = None  # side of decoded images for file trees (None: source default)


@dataclass(frozen=True)
class NetworkSection:
    channels: Annotated[int, Range(2, 4096)] = 16  # C: channels of the first cells (stem has 3C)
    layers: Annotated[int, CELLS] = 8  # cells in the supernet (P-DARTS: see strategy.stage_layers)
    steps: Annotated[int, Range(1, 16)] = 4  # intermediate nodes per cell (DARTS: 4 -> 14 edges)


@dataclass(frozen=True)
class TrainSection:
    batch_size: Annotated[int, BATCH] = 64  # per step, for the weight batch and for the alpha batch each
    seed: Annotated[int, SEED] = 0
    precision: Annotated[str, PRECISION] = "auto"  # auto | bf16 | fp16 | fp32 (auto: see SearchConfig's docstring)
    channels_last: bool = True  # 1.9x faster fp32 steps on CPU for the C=16 supernet (oneDNN depthwise convs)
    device: Annotated[str, DEVICE] = "auto"  # auto | cpu | cuda | cuda:N | mps (vipr.engine.device)
    num_threads: Annotated[int, THREADS] = 0  # torch intra-op threads; 0 = torch's default
    eval_batches: Annotated[int, COUNT_OR_OFF] = 10  # alpha-split batches scored after each epoch for "val acc"; 0 = none
    progress: bool = True


@dataclass(frozen=True)
class SearchConfig:
    """A whole search. ``precision: auto`` is fp32 on CPU (bf16 autocast measured slower there:
    forward 1.3x faster, backward 1.6x slower, C=16, 8 cells, batch 64) and bf16/fp16 on GPUs."""

    data: DataSection = field(default_factory=DataSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySettings = field(default_factory=StrategySettings)

    def __post_init__(self) -> None:
        d, n, t = self.data, self.network, self.train
        if not 0 < d.train_portion <= 1:
            raise ConfigError(f"data.train_portion must be in (0, 1], got {d.train_portion}")
        if d.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8 px (two reductions), got {d.image_size}")
        if n.channels < 2 or n.channels % 2 or n.steps < 1:
            raise ConfigError(f"network.channels must be even and >= 2 (FactorizedReduce halves it), and steps >= 1; "
                              f"got channels={n.channels}, steps={n.steps}")
        if n.layers < 3:
            raise ConfigError(f"network.layers must be >= 3 for the two reduction cells, got {n.layers}")
        if t.batch_size < 1 or t.eval_batches < 0:
            raise ConfigError(f"train.batch_size must be >= 1 and eval_batches >= 0, "
                              f"got {t.batch_size}, {t.eval_batches}")
        self.strategy.validate(self)
