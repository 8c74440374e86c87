"""``vipr nas train``: train the evaluation network of a genotype from scratch, supervised.

The recipe of DARTS' ``train.py`` (Liu et al., arXiv 1806.09055): SGD momentum 0.9, weight
decay 3e-4 on every parameter, lr 0.025 at batch 96 with a cosine to 0 (per step here, per
epoch there), gradient norm clipped at 5, auxiliary tower weight 0.4, drop-path rising
linearly from 0 to 0.2 over training, pad-crop + flip + Cutout 16 px (``vipr.nas.augment``).
Defaults are the paper's CIFAR-10 evaluation (36 channels, 20 cells, 600 epochs); a
GOLD-NAS genotype with one spec per cell fixes the cell count itself.

It runs in vipr's one training loop (``vipr.engine.trainer.Trainer``) as a training task
(``SupervisedNetwork``, vipr.engine.task), so exact resume, Ctrl-C / SIGTERM saves, the
non-finite-loss guard and the progress bar are the pre-training ones, and ``checkpoint.pt``
is a regular vipr checkpoint (backbone ``darts_net``, the task's ``deployable()``) that
``vipr eval knn|linear|finetune`` read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import (BATCH, BELOW_ONE, CELLS, COUNT, COUNT_OR_OFF, DEVICE, EPOCHS, LR, PRECISION, PROB, SEED,
                         SIDE_PX, THREADS, WEIGHT_DECAY, Range, config_digest, to_dict, without_run_only)
from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.data.batch import Batch
from vipr.data.loader import BatchIterator
from vipr.data.sources import open_dataset
from vipr.engine import distributed as dist
from vipr.engine.card import ModelCard, make_card
from vipr.engine.checkpoint import CHECKPOINT_NAME
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.progress import MetricsLog
from vipr.engine.rundir import prepare_run_dir, write_metrics
from vipr.engine.task import TaskBase
from vipr.engine.trainer import LoopSettings, Trainer, training_generator
from vipr.errors import ConfigError, DataError
from vipr.eval.features import extract_features
from vipr.eval.knn import topk_accuracy
from vipr.models.init_weights import check_weights_file, initialise
from vipr.nas import genotype as genotypes
from vipr.nas.augment import CUTOUT_AT_32, darts_train_view, scaled_px
from vipr.nas.flops import count_flops, count_params
from vipr.nas.network import DartsNetwork


@dataclass(frozen=True)
class NasTrainConfig:
    genotype: str = ""  # path of a genotype JSON (vipr-genotype/1)
    init_weights: str = ""  # weights file loaded into the network first (vipr.models.init_weights); "": random init
    data: str = "builtin:shapes"
    image_size: Annotated[int | None, SIDE_PX] = None  # px; None: the data's native side
    channels: Annotated[int, Range(2, 4096)] = 36  # C of the first cells (DARTS CIFAR eval: 36)
    layers: Annotated[int | None, CELLS] = None  # cells; None: the genotype's per-cell count, else 20 (DARTS)
    epochs: Annotated[int, EPOCHS] = 600
    batch_size: Annotated[int, BATCH] = 96  # global, over all processes
    lr: Annotated[float, LR] = 0.025  # at batch_size, not rescaled; cosine to 0
    momentum: Annotated[float, PROB] = 0.9
    weight_decay: Annotated[float, WEIGHT_DECAY] = 3e-4  # on all parameters, as DARTS
    grad_clip: Annotated[float, Range(0, 10**6)] = 5.0  # max global gradient L2 norm; 0 = off
    auxiliary_weight: Annotated[float, Range(0, 100)] = 0.4  # 0 removes the auxiliary tower
    drop_path: Annotated[float, BELOW_ONE] = 0.2  # drop-path probability reached at the end of training
    cutout: Annotated[int | None, Range(0, 4096)] = None  # px side of the Cutout square; None: 16 px at 32 px, scaled; 0 = off
    precision: Annotated[str, PRECISION] = "auto"
    seed: Annotated[int, SEED] = 0
    device: Annotated[str, DEVICE] = "auto"  # auto | cpu | cuda | cuda:N | mps (vipr.engine.device)
    num_threads: Annotated[int, THREADS] = 0  # torch intra-op threads; 0 = torch's default
    checkpoint_every: Annotated[int, COUNT_OR_OFF] = 0  # steps between mid-epoch checkpoints; 0 = epoch ends only
    log_every: Annotated[int, COUNT] = 10
    progress: bool = True


def config_hash(config: NasTrainConfig) -> str:
    return config_digest(without_run_only(to_dict(config)))


class ClippedSGD(torch.optim.SGD):
    """SGD that clips the global gradient norm to ``max_norm`` first (after GradScaler's unscale)."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, max_norm: float):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):
        if self.max_norm > 0:
            nn.utils.clip_grad_norm_([p for group in self.param_groups for p in group["params"]], self.max_norm)
        return super().step(closure)


class SupervisedNetwork(TaskBase, nn.Module):
    """The training task: cross-entropy + auxiliary loss, drop-path ramped by progress.

    ``network`` is what the trainer ships (``deployable``); ``progress`` (a buffer, so it
    resumes exactly) sets the drop-path rate: DARTS' ``drop_path_prob * epoch / epochs``.
    ``make_view`` turns (B, 3, H, W) uint8 images into one normalised float training view.
    """

    def __init__(self, network: DartsNetwork, auxiliary_weight: float, make_view=None):
        super().__init__()
        self.network, self.make_view = network, make_view
        self.auxiliary_weight = auxiliary_weight
        self.register_buffer("progress", torch.zeros(()))

    def deployable(self) -> nn.Module:
        return self.network

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        net, labels = self.network, batch.labels
        net.drop_path_rate = net.drop_path_prob * float(self.progress)
        with torch.autocast(batch.images.device.type, enabled=False):  # the view in float32 at any precision
            view = self.make_view(batch.images)  # (B, 3, S, S)
        features, aux_logits = net.forward_train(view)
        logits = net.head(features).float()  # (B, classes)
        ce = F.cross_entropy(logits, labels)
        losses = {"ce": ce, "acc": (logits.argmax(1) == labels).float().mean()}
        loss = ce
        if aux_logits is not None:
            losses["aux"] = F.cross_entropy(aux_logits.float(), labels)
            loss = ce + self.auxiliary_weight * losses["aux"]
        return {"loss": loss, **losses}

    def on_step_end(self, progress: float) -> None:
        self.progress.fill_(progress)


def load_network_spec(config: NasTrainConfig) -> tuple[genotypes.Genotype, int]:
    """The genotype and the cell count, checked before any work (ConfigError naming the fix)."""
    if not config.genotype:
        raise ConfigError("no genotype given; pass a genotype JSON (from `vipr nas search`)")
    genotype = genotypes.load(config.genotype)
    layers = config.layers if config.layers is not None else (len(genotype.cells) if genotype.cells else 20)
    genotype.cell_specs(layers)  # a per-cell genotype fixes the count; raises with the fix otherwise
    genotypes.reduction_layers(layers)  # at least 3 cells
    for name in ("epochs", "batch_size", "channels"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")
    if not 0 <= config.drop_path < 1 or config.auxiliary_weight < 0:
        raise ConfigError(f"drop_path must be in [0, 1) and auxiliary_weight >= 0, got {config.drop_path}, "
                          f"{config.auxiliary_weight}")
    return genotype, layers


def backbone_kwargs(config: NasTrainConfig, genotype: genotypes.Genotype, layers: int, image_size: int,
                    num_classes: int) -> dict:
    """``create_backbone('darts_net', **kwargs)`` rebuilds the trained network (stored in the checkpoint)."""
    return {"genotype": genotype.to_dict(), "channels": config.channels, "layers": layers,
            "small_stem": image_size <= 64, "num_classes": num_classes,
            "auxiliary": config.auxiliary_weight > 0, "drop_path_prob": config.drop_path}


def run_nas_train(config: NasTrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train the genotype's network; returns the final metrics (also in OUT/metrics.json)."""
    genotype, layers = load_network_spec(config)
    DartsNetwork(genotype, config.channels, layers)  # every structural error before touching data
    device = resolve_device(config.device)
    dist.init_from_env(device.type)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    if config.init_weights and not resume:
        check_weights_file(config.init_weights)  # before the run folder
    out = prepare_run_dir(out_dir, config, resume, checkpoint_name=CHECKPOINT_NAME)  # "already a run" before work
    dataset = _open_labelled(config.data)
    image_size = config.image_size or int(dataset.train.images.shape[-1])
    kwargs = backbone_kwargs(config, genotype, layers, image_size, dataset.num_classes)
    network = DartsNetwork(genotype, **{k: v for k, v in kwargs.items() if k != "genotype"})
    if config.init_weights and not resume:  # a resume restores every weight from its checkpoint
        initialise(network, config.init_weights, "darts_net", out if dist.is_main() else None, announce=dist.is_main())
    cost = {"params": count_params(network), "flops": count_flops(network, image_size)}
    if dist.is_main():
        print(f"darts_net C={config.channels} cells={layers}: {cost['params'] / 1e6:.3f} M params, "
              f"{cost['flops'] / 1e6:.1f} M FLOPs (multiply-adds) at {image_size} px", file=sys.stderr)
    card = make_card(architecture="darts_net", architecture_kwargs=kwargs, num_classes=dataset.num_classes,
                     image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, method="supervised",
                     classes=dataset.classes, dataset=dataset.name, dataset_digest=dataset.digest,
                     config=to_dict(config), config_hash=config_hash(config),
                     extra={"genotype_provenance": genotype.provenance, **cost})
    trainer = _build_trainer(config, network, dataset, image_size, device, out, card)
    if resume:
        trainer.restore(out / CHECKPOINT_NAME)
    trainer.fit(MetricsLog(out / "metrics.jsonl", enabled=dist.is_main()))
    test = _test_accuracy(network, dataset, image_size, device, config)
    trainer.card = replace(trainer.card, evaluation=test)
    trainer.save()  # the final checkpoint carries the test accuracy in its card
    metrics = {"steps": trainer.step, "epochs": config.epochs, **cost, **test, "image_size": image_size,
               "channels": config.channels, "layers": layers, "checkpoint": str(out / CHECKPOINT_NAME),
               "device": str(device)}
    if dist.is_main():
        write_metrics(out, metrics)
    return metrics


def _open_labelled(source: str):
    dataset = open_dataset(source)
    if dataset.num_classes < 2 or (dataset.train.labels < 0).any():
        raise DataError(f"{dataset.name} needs class labels on every train image for supervised training "
                        "(class folders, CIFAR, builtin:shapes, an npz with y_train)")
    if dataset.test is None or len(dataset.test) == 0:
        raise DataError(f"{dataset.name} has no test split; use a source with a train/test layout")
    return dataset


def _build_trainer(config: NasTrainConfig, network: DartsNetwork, dataset, image_size: int, device: torch.device,
                   out: Path, card: ModelCard) -> Trainer:
    world = dist.world_size()
    if config.batch_size % world or config.batch_size // world > len(dataset.train):
        raise ConfigError(f"batch_size {config.batch_size} must divide over {world} process(es) and not exceed "
                          f"the {len(dataset.train)} training images; lower --batch-size")
    cutout_px = scaled_px(CUTOUT_AT_32, image_size) if config.cutout is None else config.cutout
    generator = training_generator(config.seed)  # the crops, flips and Cutout boxes; checkpointed
    make_view = partial(darts_train_view, image_size=image_size, cutout_px=cutout_px, generator=generator)
    model = SupervisedNetwork(network, config.auxiliary_weight, make_view).to(device)
    optimizer = ClippedSGD(model.parameters(), config.lr, config.momentum, config.weight_decay, config.grad_clip)
    loader = BatchIterator(dataset.train, config.batch_size // world, shuffle=True, seed=config.seed, drop_last=True,
                           rank=dist.rank(), world_size=world)
    settings = LoopSettings(epochs=config.epochs, precision=resolve_precision(config.precision, device),
                            checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                            progress=config.progress, seed=config.seed)
    return Trainer(model, optimizer, loader, settings, out, card, device, generator)


def _test_accuracy(network: DartsNetwork, dataset, image_size: int, device: torch.device,
                   config: NasTrainConfig) -> dict:
    """Top-1/top-5 (%) of the trained classifier on the labelled test images (eval transform: resize)."""
    rows = (dataset.test.labels >= 0).nonzero()[0]
    features = extract_features(network, dataset.test.images, indices=rows, image_size=image_size,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device, precision=config.precision,
                                progress=config.progress, desc="test")  # (N_test, D)
    with torch.no_grad():
        logits = network.head(features.to(device)).cpu()  # (N_test, classes)
    accuracy = topk_accuracy(logits, torch.from_numpy(dataset.test.labels[rows]).long())
    return {"test_top1": accuracy["top1"], "test_top5": accuracy["top5"], "num_test": int(len(rows))}
