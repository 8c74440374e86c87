"""The pre-training job: typed settings, then data -> backbone -> method -> trainer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch

from vipr import ssl
from vipr.config import (BATCH, COUNT, COUNT_OR_OFF, DEVICE, EPOCHS, LR, PRECISION, PROB, SEED, SIDE_PX, THREADS,
                         WEIGHT_DECAY, Choices, Range, config_digest, from_dict, to_dict, without_run_only)
from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD, get_recipe
from vipr.data.fusion import FUSED_MIN_SIDE
from vipr.data.encoded_loader import EncodedBatchIterator, StreamingBatchIterator
from vipr.data.encoded_source import DecodedImages
from vipr.data.loader import BatchIterator
from vipr.data.splits import load_label_split
from vipr.data.stores import STORES, open_training_dataset
from vipr.data.train_data import TrainData
from vipr.data.types import ImageSplit
from vipr.data.views import ViewMaker
from vipr.engine import distributed as dist
from vipr.engine.card import make_card
from vipr.engine.checkpoint import CHECKPOINT_NAME
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.optim import create_optimizer
from vipr.engine.progress import MetricsLog, last_epoch_record
from vipr.engine.rundir import check_run_dir, prepare_run_dir, write_metrics
from vipr.engine.trainer import LoopSettings, Trainer, training_generator
from vipr.errors import ConfigError
from vipr.eval.monitor import BEST_NAME, build_monitor
from vipr.fsutil import atomic_write_text
from vipr.models import create_backbone
from vipr.models.init_weights import check_weights_file, initialise
from vipr.profiles import PROFILES, apply_profile


@dataclass(frozen=True)
class DataConfig:
    source: str = "builtin:shapes"
    image_size: Annotated[int, SIDE_PX] = 32  # side of the augmented crops, px
    store_size: Annotated[int | None, SIDE_PX] = None  # side of stored images of file trees (None: vipr.data.stores)
    store: Annotated[str, Choices(*STORES)] = "auto"  # raw | encoded | auto: raw when it fits raw_budget_gb
    raw_budget_gb: Annotated[float | None, Range(0, 10**6, low_open=True)] = None  # None: 1/4 of the free disk
    # > 0: read the encoded store's shards in sequence through a shuffle buffer of this many images
    # (no random access: data on a network volume); 0: one random permutation of all images an epoch
    shuffle_buffer: Annotated[int, Range(0, 10**9)] = 0
    # GB of the encoded store's shards kept memory-mapped at once, least recently read closed first: pages read
    # through an open map count toward the process's RSS. 1 GB: three 256 MiB shards; a shard read again after
    # its map closed is mapped again (a system call; its pages stay in the kernel's page cache)
    cache_gb: Annotated[float | None, Range(0, 10**6, low_open=True)] = 1.0  # None: every shard stays mapped
    # defaults recipe: small (<= 64 px) or large images; auto picks by image_size (vipr.profiles)
    profile: Annotated[str, Choices(*PROFILES)] = "auto"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    small_stem: bool | None = None  # 3x3 stride-1 stem, no max-pool; None: on for images <= 64 px
    init_weights: str = ""  # weights file loaded into the backbone first (vipr.models.init_weights); "": random init


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Annotated[str, Choices("sgd", "lars")] = "sgd"
    lr: Annotated[float, LR] = 0.3  # per 256 images; scaled linearly with the global batch size
    weight_decay: Annotated[float, WEIGHT_DECAY] = 1e-4
    momentum: Annotated[float, PROB] = 0.9
    warmup_epochs: Annotated[float, Range(0, 10**6)] = 0.0
    min_lr_ratio: Annotated[float, PROB] = 0.0  # final lr / peak lr of the cosine
    # images <= 64 px (vipr.profiles): lr 0.06 per 128 images and weight decay 5e-4, as lightly's CIFAR
    # recipes; with MoCo's small-image head and temperature, +14 kNN points on unseen photos (docs/peer_quality.md)
    SMALL_IMAGES: ClassVar[dict] = {"lr": 0.12, "weight_decay": 5e-4}


@dataclass(frozen=True)
class TrainConfig:
    epochs: Annotated[int, EPOCHS] = 100
    batch_size: Annotated[int, BATCH] = 256  # global, over all processes
    precision: Annotated[str, PRECISION] = "auto"  # auto = bf16 where fast (this CPU included)
    channels_last: bool = True
    compile: bool = False  # torch.compile the online encoder (not faster on the 2-core CPU measured)
    # torch.compile the views' per-pixel ops (vipr.data.fusion); None: on for views of FUSED_MIN_SIDE (128) px
    # and more, where the seconds of compiling pay back within the first epochs
    fused_augment: bool | None = None
    checkpoint_every: Annotated[int, COUNT_OR_OFF] = 200  # steps between mid-epoch checkpoints (0: epoch ends only)
    log_every: Annotated[int, COUNT] = 10  # steps between metric lines
    seed: Annotated[int, SEED] = 0
    device: Annotated[str, DEVICE] = "auto"  # auto | cpu | cuda | cuda:N | mps (vipr.engine.device)
    num_threads: Annotated[int, THREADS] = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True
    on_nan: Annotated[str, Choices("stop", "skip")] = "stop"  # a non-finite loss stops the run, or skips its step
    # online monitoring (vipr.eval.monitor): a kNN probe on the source's labelled train/test images
    knn_every: Annotated[int, COUNT_OR_OFF] = 0  # epochs between probes; 0 = no probe
    knn_k: Annotated[int, Range(1, 10**6)] = 200  # neighbours of the probe's vote (at most the labelled images)
    keep_best: bool = False  # keep the best probe's backbone as RUN/best.pt (needs knn_every > 0)


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: ssl.MethodConfig = field(default_factory=ssl.MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def build_config(data: dict) -> PretrainConfig:
    """The typed config of ``data`` (nested settings), with the image-size profile's defaults resolved."""
    config = apply_profile(from_dict(PretrainConfig, data), data)
    if config.model.small_stem is None:
        config = replace(config, model=replace(config.model, small_stem=config.data.image_size <= 64))
    if config.train.fused_augment is None:
        fused = config.data.image_size >= FUSED_MIN_SIDE
        config = replace(config, train=replace(config.train, fused_augment=fused))
    return config


def config_hash(config: PretrainConfig) -> str:
    d = to_dict(config)
    d["train"], d["data"] = without_run_only(d["train"]), without_run_only(d["data"])
    return config_digest(d)


def run_pretrain(config: PretrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Pre-train a backbone; returns the final metrics (also in OUT/metrics.json)."""
    if config.train.epochs < 1:  # before the run folder: no epochs would leave no checkpoint to report
        raise ConfigError(f"train.epochs must be >= 1, got {config.train.epochs}")
    device = resolve_device(config.train.device)
    dist.init_from_env(device.type)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.train.seed)
    if config.model.init_weights and not resume:
        check_weights_file(config.model.init_weights)  # before the run folder
    check_run_dir(out_dir, resume, CHECKPOINT_NAME)
    dataset = open_run_dataset(config)
    out = prepare_run_dir(out_dir, config, resume, checkpoint_name=CHECKPOINT_NAME)
    warn_about_data(config, len(dataset.train))
    if dist.is_main() and dataset.skipped:
        atomic_write_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in dataset.skipped))
    trainer = build_trainer(config, dataset, device, out, resume)
    if resume:
        trainer.restore(out / CHECKPOINT_NAME)
    log = MetricsLog(out / "metrics.jsonl", enabled=dist.is_main())
    trainer.fit(log)
    metrics = {"steps": trainer.step, "epochs": config.train.epochs, "device": str(device),
               **last_epoch_record(out / "metrics.jsonl"), "checkpoint": str(out / CHECKPOINT_NAME),
               "skipped_images": len(dataset.skipped), **_best(trainer, out)}
    if dist.is_main():
        write_metrics(out, metrics)
    return metrics


def open_run_dataset(config: PretrainConfig):
    """The training data of a run (pre-training or distillation) as ``config.data`` asks: raw or encoded store."""
    dataset, _ = open_training_dataset(config.data.source, store=config.data.store, store_size=config.data.store_size,
                                       image_size=config.data.image_size, raw_budget_gb=config.data.raw_budget_gb,
                                       cache_gb=config.data.cache_gb,
                                       model_threads=torch.get_num_threads(), progress=config.train.progress)
    return dataset


def warn_about_data(config: PretrainConfig, num_train: int) -> None:
    """Settings that run but are wrong for this many images: a queue of keys longer than the data."""
    queue = getattr(config.method, "queue_size", None)
    if queue is not None and queue > num_train and dist.is_main():
        warnings.warn(f"method.queue_size {queue} is larger than the {num_train} training images: the queue holds "
                      f"several keys of each image, so an image's own older keys count as its negatives; "
                      f"use --set method.queue_size=N with N below {num_train}", stacklevel=2)


def build_trainer(config: PretrainConfig, dataset, device: torch.device, out: Path, resume: bool = False) -> Trainer:
    world = dist.world_size()
    precision = resolve_precision(config.train.precision, device)
    monitor = build_monitor(config, dataset, out, resume, precision, IMAGENET_MEAN, IMAGENET_STD)  # its errors first
    if config.train.batch_size % world:
        raise ConfigError(f"train.batch_size {config.train.batch_size} must divide evenly over {world} processes")
    per_rank = config.train.batch_size // world
    if per_rank > len(dataset.train):
        raise ConfigError(f"batch size {per_rank} per process exceeds the {len(dataset.train)} training images; lower --batch-size")
    backbone_kwargs = {"small_stem": bool(config.model.small_stem)}
    backbone = create_backbone(config.model.backbone, **backbone_kwargs)
    if config.model.init_weights and not resume:  # before the method copies it (momentum encoders); a resume restores
        initialise(backbone, config.model.init_weights, config.model.backbone, out if dist.is_main() else None,
                   announce=dist.is_main())
    method_config = config.method
    if getattr(method_config, "num_classes", None) == 0:  # supervised: the dataset's classes
        method_config = replace(method_config, num_classes=dataset.num_classes)
    train = ImageSplit(dataset.train.images, train_labels(config, dataset))
    generator = training_generator(config.train.seed)  # views and the method's draws; checkpointed by the trainer
    views = ViewMaker(tuple(get_recipe(ssl.method_recipe(method_config), config.data.image_size)), generator,
                      device, IMAGENET_MEAN, IMAGENET_STD, fused_augment=bool(config.train.fused_augment))
    data = TrainData(train.images, train.labels, config.data.image_size, device, precision,
                     progress=config.train.progress)
    model = ssl.create_method(method_config, backbone, views=views, data=data).to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.train.compile:
        model.online.compile()  # in place, so state_dict keys stay; online = backbone + projection
    lr = config.optim.lr * config.train.batch_size / 256
    optimizer = create_optimizer(config.optim.optimizer, model, lr, config.optim.momentum, config.optim.weight_decay)
    loader = training_loader(train, per_rank, model.views.specs, config.train.seed, config.data.shuffle_buffer)
    settings = LoopSettings(
        epochs=config.train.epochs, precision=precision,
        warmup_steps=int(config.optim.warmup_epochs * len(loader)), min_lr_ratio=config.optim.min_lr_ratio,
        checkpoint_every=config.train.checkpoint_every, log_every=config.train.log_every,
        progress=config.train.progress, seed=config.train.seed, on_nan=config.train.on_nan)
    card = make_card(architecture=config.model.backbone, architecture_kwargs=backbone_kwargs,
                     image_size=config.data.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     method=config.method.name, classes=dataset.classes, dataset=dataset.name,
                     dataset_digest=dataset.digest, config=to_dict(config), config_hash=config_hash(config))
    return Trainer(model, optimizer, loader, settings, out, card, device, generator, monitor=monitor)


def training_loader(train: ImageSplit, per_rank: int, specs, seed: int, shuffle_buffer: int = 0) -> BatchIterator:
    """This rank's batches: uint8 images of the raw store, or each view's crop cut at decode (encoded store),
    streamed shard by shard when ``shuffle_buffer`` > 0."""
    kwargs = {"shuffle": True, "seed": seed, "drop_last": True, "rank": dist.rank(), "world_size": dist.world_size()}
    encoded = isinstance(train.images, DecodedImages)
    if shuffle_buffer and not encoded:
        raise ConfigError("data.shuffle_buffer streams the shards of the encoded store; set data.store=encoded "
                          "(an image folder), or data.shuffle_buffer=0")
    try:
        if shuffle_buffer:
            return StreamingBatchIterator(train, per_rank, specs=specs, threads=train.images.decoder_threads,
                                          buffer=shuffle_buffer, **kwargs)
        if encoded:
            return EncodedBatchIterator(train, per_rank, specs=specs, threads=train.images.decoder_threads, **kwargs)
    except ValueError as err:  # too few shards or images for the ranks and batch
        raise ConfigError(f"data: {err}") from None
    return BatchIterator(train, per_rank, **kwargs)


def train_labels(config: PretrainConfig, dataset) -> np.ndarray:
    """Train labels the method may see: all of them, or only a label split's (-1 elsewhere)."""
    labels = np.asarray(dataset.train.labels, dtype=np.int64)
    split_path = getattr(config.method, "label_split", "")
    if not split_path:
        return labels
    keep = load_label_split(split_path, dataset)
    masked = np.full_like(labels, -1)
    masked[keep] = labels[keep]
    return masked


def _best(trainer: Trainer, out: Path) -> dict:
    """The kNN probe's best top-1 and best.pt, for metrics.json (nothing without train.keep_best)."""
    best = getattr(trainer.monitor, "best", None)
    return {} if best is None else {"knn_best_top1": best, "best_checkpoint": str(out / BEST_NAME)}


