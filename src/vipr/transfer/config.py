"""Typed settings of ``vipr transfer detect|instance|segment``, sectioned as every vipr command's.

Defaults are chosen for a 2-core CPU and 64-256 px canvases (builtin:scenes), not for COCO at
800 px: a ResNet-18, a 64-channel FPN and 256-wide heads (a 256-channel FPN with 1,024-wide heads
costs ~10x the step time at 128 px, where those heads, not the backbone, dominate), batch 4.
The optimisation follows detectron2's 1x recipe scaled to that batch: SGD momentum 0.9, weight
decay 1e-4, a linear warm-up then x0.1 at 2/3 and 8/9 of the steps, gradient norm clipped at
10 (an unclipped lr 0.02 diverged within 10 steps from random init on CPU probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from vipr.config import (BATCH, COUNT, COUNT_OR_OFF, DEVICE, LR, PRECISION, PROB, SEED, SIDE_PX, THREADS,
                         WEIGHT_DECAY, Choices, Range, config_digest, to_dict, without_run_only)

TASKS = ("detect", "instance", "segment")
# model kinds per task, the default first (vipr.transfer.models)
TASK_KINDS = {"detect": ("faster_rcnn", "retinanet"), "instance": ("mask_rcnn",), "segment": ("fcn", "aspp")}


@dataclass(frozen=True)
class InputSection:
    checkpoint: str = "random"  # a vipr run folder or .pt, a registered NAME[@ALIAS], "random", or a state-dict file
    backbone: str | None = None  # the architecture of "random" or of a plain state-dict file (default resnet18)
    data: str = "builtin:scenes"  # coco:ROOT, voc:ROOT, masks:ROOT, builtin:scenes?...


@dataclass(frozen=True)
class ModelSection:
    kind: str = ""  # faster_rcnn | retinanet | mask_rcnn | fcn | aspp; "": the task's default
    norm: Annotated[str, Choices("frozen", "bn", "syncbn")] = "syncbn"  # MoCo's protocol: trainable, synchronised BN
    trainable_stages: Annotated[int | None, Range(0, 64)] = None  # None: all; N: the last N backbone stages
    fpn_channels: Annotated[int, Range(8, 1024)] = 64  # width of every FPN level (torchvision: 256)
    head_channels: Annotated[int, Range(8, 4096)] = 256  # box head MLP width (torchvision: 1024); the segmenter's head
    # width too (the mask head is as wide as the FPN)
    anchor_sizes: tuple[int, ...] = ()  # px, one per FPN level; (): derived from the image size


@dataclass(frozen=True)
class DataSection:
    image_size: Annotated[int | None, SIDE_PX] = None  # canvas side the store decodes to; None: the source's
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)  # multi-scale training: one drawn per batch (vipr.transfer.augment)
    hflip: Annotated[float, PROB] = 0.5


@dataclass(frozen=True)
class OptimSection:
    lr: Annotated[float, LR] = 0.01  # at train.batch_size (detectron2: 0.02 at 16, here a smaller batch on CPU)
    backbone_lr_scale: Annotated[float, Range(0, 10)] = 1.0  # backbone lr = lr x this (0 trains the heads only)
    momentum: Annotated[float, PROB] = 0.9
    weight_decay: Annotated[float, WEIGHT_DECAY] = 1e-4
    schedule: Annotated[str, Choices("step", "cosine")] = "step"
    warmup_iters: Annotated[int, COUNT_OR_OFF] = 50  # linear warm-up steps, capped at a fifth of the run
    grad_clip: Annotated[float, Range(0, 10**6)] = 10.0  # max global gradient L2 norm; 0 = off


@dataclass(frozen=True)
class TrainSection:
    epochs: Annotated[int, Range(1, 10**6)] = 12  # passes over the train split (--iters, given, ends the run)
    iters: Annotated[int | None, Range(1, 10**9)] = None  # steps; given, it ends the run (over epochs' length)
    batch_size: Annotated[int, BATCH] = 4  # global, over all processes
    precision: Annotated[str, PRECISION] = "auto"  # bf16 where the CPU has AMX or on GPUs (1.8x a Mask R-CNN step)
    seed: Annotated[int, SEED] = 0
    device: Annotated[str, DEVICE] = "auto"
    num_threads: Annotated[int, THREADS] = 0
    checkpoint_every: Annotated[int, COUNT_OR_OFF] = 100  # steps between mid-epoch checkpoints; 0: epoch ends
    log_every: Annotated[int, COUNT] = 10
    progress: bool = True


@dataclass(frozen=True)
class EvalSection:
    batch_size: Annotated[int, BATCH] = 8
    score_thresh: Annotated[float, PROB] = 0.05  # detections below it are dropped (COCO practice)
    max_detections: Annotated[int, Range(1, 10**4)] = 100  # per image (COCO's AR@100)


@dataclass(frozen=True)
class TransferConfig:
    task: Annotated[str, Choices(*TASKS)] = "detect"
    input: InputSection = field(default_factory=InputSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    @property
    def kind(self) -> str:
        """The model kind: ``model.kind`` or the task's default."""
        return self.model.kind or TASK_KINDS[self.task][0]


def check_config(config: TransferConfig) -> None:
    """Cross-field checks (ConfigError naming the key and the fix), before any data is read."""
    from vipr.errors import ConfigError

    kinds = TASK_KINDS[config.task]
    if config.model.kind and config.model.kind not in kinds:
        raise ConfigError(f"model.kind {config.model.kind} does not do {config.task}; valid: {', '.join(kinds)}")
    if not config.data.scales or any(not 0.25 <= s <= 4 for s in config.data.scales):
        raise ConfigError(f"data.scales must be factors in [0.25, 4], got {list(config.data.scales)}")
    if any(a < 1 for a in config.model.anchor_sizes):
        raise ConfigError(f"model.anchor_sizes must be positive px, got {list(config.model.anchor_sizes)}")


def config_hash(config: TransferConfig) -> str:
    """What a resume must match: everything but the run-only keys of ``train``."""
    settings = to_dict(config)
    settings["train"] = without_run_only(settings["train"])
    return config_digest(settings)
