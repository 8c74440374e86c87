"""Typed settings of ``vipr nas train``, in sections as pre-training's and the search's.

``data`` (what it trains on and the view), ``network`` (the genotype's evaluation network),
``optim`` (DARTS' SGD) and ``train`` (the loop). Defaults are DARTS' CIFAR-10 evaluation
(Liu et al., arXiv 1806.09055, ``train.py``); see vipr.nas.train for the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from vipr.config import (BATCH, BELOW_ONE, CELLS, COUNT, COUNT_OR_OFF, DEVICE, EPOCHS, LR, PRECISION, PROB, SEED,
                         SIDE_PX, THREADS, WEIGHT_DECAY, Range, config_digest, to_dict, without_run_only)


@dataclass(frozen=True)
class EvalDataSection:
    source: str = "builtin:shapes"  # labelled data with a test split
    image_size: Annotated[int | None, SIDE_PX] = None  # px; None: the data's native side
    cutout: Annotated[int | None, Range(0, 4096)] = None  # px side of the Cutout square; None: 16 px at 32 px, scaled; 0 = off


@dataclass(frozen=True)
class EvalNetworkSection:
    genotype: str = ""  # path of a genotype JSON (vipr-genotype/1)
    channels: Annotated[int, Range(2, 4096)] = 36  # C of the first cells (DARTS CIFAR eval: 36)
    layers: Annotated[int | None, CELLS] = None  # cells; None: the genotype's per-cell count, else 20 (DARTS)
    auxiliary_weight: Annotated[float, Range(0, 100)] = 0.4  # 0 removes the auxiliary tower
    drop_path: Annotated[float, BELOW_ONE] = 0.2  # drop-path probability reached at the end of training
    init_weights: str = ""  # weights file loaded into the network first (vipr.models.init_weights); "": random init


@dataclass(frozen=True)
class EvalOptimSection:
    lr: Annotated[float, LR] = 0.025  # at train.batch_size, not rescaled; cosine to 0
    momentum: Annotated[float, PROB] = 0.9
    weight_decay: Annotated[float, WEIGHT_DECAY] = 3e-4  # on all parameters, as DARTS
    grad_clip: Annotated[float, Range(0, 10**6)] = 5.0  # max global gradient L2 norm; 0 = off


@dataclass(frozen=True)
class EvalTrainSection:
    epochs: Annotated[int, EPOCHS] = 600
    batch_size: Annotated[int, BATCH] = 96  # global, over all processes
    precision: Annotated[str, PRECISION] = "auto"
    seed: Annotated[int, SEED] = 0
    device: Annotated[str, DEVICE] = "auto"  # auto | cpu | cuda | cuda:N | mps (vipr.engine.device)
    num_threads: Annotated[int, THREADS] = 0  # torch intra-op threads; 0 = torch's default
    checkpoint_every: Annotated[int, COUNT_OR_OFF] = 0  # steps between mid-epoch checkpoints; 0 = epoch ends only
    log_every: Annotated[int, COUNT] = 10
    progress: bool = True


@dataclass(frozen=True)
class NasTrainConfig:
    """A whole ``vipr nas train`` run, as its run folder's config.yaml holds it."""

    data: EvalDataSection = field(default_factory=EvalDataSection)
    network: EvalNetworkSection = field(default_factory=EvalNetworkSection)
    optim: EvalOptimSection = field(default_factory=EvalOptimSection)
    train: EvalTrainSection = field(default_factory=EvalTrainSection)


def config_hash(config: NasTrainConfig) -> str:
    """What a resume must match: every setting but the run-only ones of ``train`` (threads, progress)."""
    settings = to_dict(config)
    settings["train"] = without_run_only(settings["train"])
    return config_digest(settings)
