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
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vipr.config import to_dict
from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.data.batch import Batch
from vipr.data.loader import BatchIterator
from vipr.data.sources import open_dataset
from vipr.engine import distributed as dist
from vipr.engine.card import ModelCard, make_card
from vipr.engine.checkpoint import CHECKPOINT_NAME
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.optim import ClippedSGD
from vipr.engine.progress import MetricsLog
from vipr.engine.rundir import check_run_dir, prepare_run_dir, write_metrics
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
from vipr.nas.train_config import NasTrainConfig, config_hash


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
    if not config.network.genotype:
        raise ConfigError("no genotype given; pass a genotype JSON (from `vipr nas search`)")
    genotype = genotypes.load(config.network.genotype)
    net = config.network
    layers = net.layers if net.layers is not None else (len(genotype.cells) if genotype.cells else 20)
    genotype.cell_specs(layers)  # a per-cell genotype fixes the count; raises with the fix otherwise
    genotypes.reduction_layers(layers)  # at least 3 cells
    for key, value in (("train.epochs", config.train.epochs), ("train.batch_size", config.train.batch_size),
                       ("network.channels", net.channels)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if not 0 <= net.drop_path < 1 or net.auxiliary_weight < 0:
        raise ConfigError(f"network.drop_path must be in [0, 1) and network.auxiliary_weight >= 0, got "
                          f"{net.drop_path}, {net.auxiliary_weight}")
    return genotype, layers


def backbone_kwargs(config: NasTrainConfig, genotype: genotypes.Genotype, layers: int, image_size: int,
                    num_classes: int) -> dict:
    """``create_backbone('darts_net', **kwargs)`` rebuilds the trained network (stored in the checkpoint)."""
    return {"genotype": genotype.to_dict(), "channels": config.network.channels, "layers": layers,
            "small_stem": image_size <= 64, "num_classes": num_classes,
            "auxiliary": config.network.auxiliary_weight > 0, "drop_path_prob": config.network.drop_path}


def run_nas_train(config: NasTrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train the genotype's network; returns the final metrics (also in OUT/metrics.json)."""
    genotype, layers = load_network_spec(config)
    DartsNetwork(genotype, config.network.channels, layers)  # every structural error before touching data
    device = resolve_device(config.train.device)
    dist.init_from_env(device.type)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.train.seed)
    if config.network.init_weights and not resume:
        check_weights_file(config.network.init_weights)  # before the run folder
    check_run_dir(out_dir, resume, CHECKPOINT_NAME)  # "already a run" before work
    dataset = _open_labelled(config.data.source)
    out = prepare_run_dir(out_dir, config, resume, checkpoint_name=CHECKPOINT_NAME)
    image_size = config.data.image_size or int(dataset.train.images.shape[-1])
    kwargs = backbone_kwargs(config, genotype, layers, image_size, dataset.num_classes)
    network = DartsNetwork(genotype, **{k: v for k, v in kwargs.items() if k != "genotype"})
    if config.network.init_weights and not resume:  # a resume restores every weight from its checkpoint
        initialise(network, config.network.init_weights, "darts_net", out if dist.is_main() else None,
                   announce=dist.is_main())
    cost = {"params": count_params(network), "flops": count_flops(network, image_size)}
    if dist.is_main():
        print(f"darts_net C={config.network.channels} cells={layers}: {cost['params'] / 1e6:.3f} M params, "
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
    metrics = {"steps": trainer.step, "epochs": config.train.epochs, **cost, **test, "image_size": image_size,
               "channels": config.network.channels, "layers": layers, "checkpoint": str(out / CHECKPOINT_NAME),
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
    batch = config.train.batch_size
    if batch % world or batch // world > len(dataset.train):
        raise ConfigError(f"train.batch_size {batch} must divide over {world} process(es) and not exceed "
                          f"the {len(dataset.train)} training images; lower --batch-size")
    cutout_px = scaled_px(CUTOUT_AT_32, image_size) if config.data.cutout is None else config.data.cutout
    generator = training_generator(config.train.seed)  # the crops, flips and Cutout boxes; checkpointed
    make_view = partial(darts_train_view, image_size=image_size, cutout_px=cutout_px, generator=generator)
    model = SupervisedNetwork(network, config.network.auxiliary_weight, make_view).to(device)
    optim, train = config.optim, config.train
    optimizer = ClippedSGD(model.parameters(), optim.lr, optim.momentum, optim.weight_decay, optim.grad_clip)
    loader = BatchIterator(dataset.train, train.batch_size // world, shuffle=True, seed=train.seed, drop_last=True,
                           rank=dist.rank(), world_size=world)
    settings = LoopSettings(epochs=train.epochs, precision=resolve_precision(train.precision, device),
                            checkpoint_every=train.checkpoint_every, log_every=train.log_every,
                            progress=train.progress, seed=train.seed)
    return Trainer(model, optimizer, loader, settings, out, card, device, generator)


def _test_accuracy(network: DartsNetwork, dataset, image_size: int, device: torch.device,
                   config: NasTrainConfig) -> dict:
    """Top-1/top-5 (%) of the trained classifier on the labelled test images (eval transform: resize)."""
    rows = (dataset.test.labels >= 0).nonzero()[0]
    features = extract_features(network, dataset.test.images, indices=rows, image_size=image_size,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device, precision=config.train.precision,
                                progress=config.train.progress, desc="test")  # (N_test, D)
    with torch.no_grad():
        logits = network.head(features.to(device)).cpu()  # (N_test, classes)
    accuracy = topk_accuracy(logits, torch.from_numpy(dataset.test.labels[rows]).long())
    return {"test_top1": accuracy["top1"], "test_top5": accuracy["top5"], "num_test": int(len(rows))}
