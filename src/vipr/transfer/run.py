"""``vipr transfer detect|instance|segment``: fine-tune a vipr backbone with a detection or segmentation head.

The run goes through the one engine (vipr.engine.trainer.Trainer) as a training task
(vipr.transfer.task), so exact resume, Ctrl-C / SIGTERM saves, the loss guard, DDP, progress
and per-step metrics are those of pre-training. At the end the test split is scored (COCO
AP / AR and VOC mAP, or mIoU), the figures go into metrics.json and into the model card of
``checkpoint.pt``, a regular vipr checkpoint whose task is the transfer task.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from vipr.config import to_dict
from vipr.data.dense.sources import open_dense
from vipr.data.dense.types import DenseDataset
from vipr.data.loader import BatchIterator
from vipr.engine import distributed as dist
from vipr.engine.card import make_card
from vipr.engine.checkpoint import CHECKPOINT_NAME
from vipr.engine.device import resolve_device
from vipr.engine.optim import ClippedSGD
from vipr.engine.progress import MetricsLog
from vipr.engine.rundir import check_run_dir, prepare_run_dir, write_metrics
from vipr.engine.trainer import LoopSettings, Trainer, training_generator
from vipr.errors import ConfigError, DataError
from vipr.transfer.augment import DenseAugment
from vipr.transfer.build import build_transfer_model, model_spec, parameter_groups
from vipr.transfer.config import TransferConfig, check_config, config_hash
from vipr.transfer.evaluate import evaluate
from vipr.transfer.task import DetectionTask, LabelRows, SegmentationTask
from vipr.transfer.weights import initial_backbone

SUMMARY_KEYS = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "voc_mAP50", "mIoU", "pixel_acc")


def run_transfer(config: TransferConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Fine-tune, then score the test split; returns the metrics (also OUT/metrics.json)."""
    check_config(config)
    device = resolve_device(config.train.device)
    dist.init_from_env(device.type)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.train.seed)
    check_run_dir(out_dir, resume, CHECKPOINT_NAME)
    ds = open_task_data(config.input.data, config.task, config.data.image_size)
    image_size = ds.train.canvas_size
    init = initial_backbone(config.input.checkpoint, config.input.backbone, image_size,
                            announce=dist.is_main() and not resume)  # a bad checkpoint fails before the run folder
    out = prepare_run_dir(out_dir, config, resume, checkpoint_name=CHECKPOINT_NAME)
    if init.report is not None and dist.is_main() and not resume:
        init.report.write(out)
    spec = model_spec(config, init, ds.num_classes, image_size)
    model = build_transfer_model(spec, init.backbone).to(device)
    card = make_card(architecture=config.kind, architecture_kwargs=spec, task=config.task, num_classes=ds.num_classes,
                     image_size=image_size, mean=init.mean, std=init.std, classes=ds.classes, method=init.method,
                     dataset=ds.name, dataset_digest=ds.digest, config=to_dict(config), config_hash=config_hash(config),
                     parent=init.parent, extra={"backbone": init.architecture, "category_ids": ds.category_ids})
    trainer = _build_trainer(config, model, ds, image_size, device, out, card)
    if resume:
        trainer.restore(out / CHECKPOINT_NAME)
    trainer.fit(MetricsLog(out / "metrics.jsonl", enabled=dist.is_main()))
    figures = evaluate(model, ds, config.task, config.eval.batch_size, device, config.train.progress) \
        if dist.is_main() else {}
    trainer.card = replace(trainer.card, evaluation={"kind": config.task, **_scalars(figures)})
    trainer.save()  # the final checkpoint carries the test figures in its card
    metrics = {"task": config.task, "model": config.kind, "steps": trainer.step, "image_size": image_size,
               **figures, "checkpoint": str(out / CHECKPOINT_NAME), "device": str(device)}
    if dist.is_main():
        write_metrics(out, metrics)
    return metrics


def open_task_data(source: str, task: str, image_size: int | None) -> DenseDataset:
    """The dense source, checked to carry what ``task`` trains and scores on."""
    ds = open_dense(source, store_size=image_size)
    split = ds.train
    if task == "segment" and split.semantic_maps is None:
        raise DataError(f"{source} has no semantic label maps; `vipr transfer segment` needs masks:ROOT, "
                        "voc:ROOT with SegmentationClass, or builtin:scenes")
    if task == "instance" and not split.has_masks:
        raise DataError(f"{source} has boxes but no instance masks; use `vipr transfer detect`, or COCO polygons/RLE")
    if task != "segment" and len(split.instances) == 0:
        raise DataError(f"{source} has no box annotations in its train split; `vipr transfer {task}` needs them")
    if ds.test is None or len(ds.test) == 0:
        raise DataError(f"{source} has no test / val split to score on; add one (e.g. instances_val*.json)")
    return ds


def _build_trainer(config: TransferConfig, model, ds: DenseDataset, image_size: int, device: torch.device,
                   out: Path, card) -> Trainer:
    world, train = dist.world_size(), config.train
    if train.batch_size % world or train.batch_size // world > len(ds.train):
        raise ConfigError(f"train.batch_size {train.batch_size} must divide over {world} process(es) and not "
                          f"exceed the {len(ds.train)} training images; lower --batch-size")
    generator = training_generator(train.seed)  # scales and flips; checkpointed
    augment = DenseAugment(scales=tuple(config.data.scales), hflip=config.data.hflip)
    if config.task == "segment":
        task = SegmentationTask(model, ds.train, augment, generator)
    else:
        task = DetectionTask(model, ds.train, augment, generator, masks=config.task == "instance")
    optim = config.optim
    optimizer = ClippedSGD(parameter_groups(model, optim.lr, optim.backbone_lr_scale), optim.lr, optim.momentum,
                           optim.weight_decay, optim.grad_clip)
    loader = BatchIterator(LabelRows(ds.train), train.batch_size // world, shuffle=True, seed=train.seed,
                           drop_last=True, rank=dist.rank(), world_size=world)
    epochs = train.epochs if train.iters is None else math.ceil(train.iters / len(loader))
    total = train.iters or epochs * len(loader)
    settings = LoopSettings(epochs=epochs, precision=_precision(train.precision, device),
                            warmup_steps=min(optim.warmup_iters, total // 5), schedule=optim.schedule,
                            max_steps=train.iters, checkpoint_every=train.checkpoint_every, log_every=train.log_every,
                            progress=train.progress, seed=train.seed, name=config.task,
                            ddp_find_unused=config.task != "segment")
    return Trainer(task, optimizer, loader, settings, out, card, device, generator)


def _precision(precision: str, device: torch.device) -> str:
    from vipr.engine.device import resolve_precision

    return resolve_precision(precision, device)


def _scalars(figures: dict) -> dict:
    """The card's copy of the figures: the numbers only (per-class tables stay in metrics.json)."""
    return {k: v for k, v in figures.items() if isinstance(v, (int, float)) or v is None}


def summary_line(metrics: dict, where: str | None = None) -> str:
    """One line for the terminal: the headline figures (percent) of the task; ``where``: default the steps."""
    shown = [f"{k} {metrics[k]:.1f}" for k in SUMMARY_KEYS if isinstance(metrics.get(k), (int, float))]
    where = where or f"{metrics['steps']} steps"
    return f"{metrics['task']} ({metrics['model']}, {where}): {', '.join(shown) or 'no figures'}"
