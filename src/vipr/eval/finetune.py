"""Fine-tuning: the whole network trained on a labelled subset, then scored on the test split.

The semi-supervised protocol of the papers vipr follows (1% / 10% labels, the whole
network fine-tuned; SimCLR, arXiv 2002.05709, appendix on semi-supervised fine-tuning:
Nesterov momentum, crop and flip only), at small-data scale. The weight decay and the
10x smaller backbone lr are choices for small labelled sets. Recipe, fixed here (not
tuned on any test split):

* the backbone plus a new, zero-initialised linear head (no RNG, and the first steps
  move the head before they move the features) on *standardised* features, cross-entropy:
  a BatchNorm1d without affine (MAE's probe) normalises each batch's features, so one head
  lr suits any feature scale. Without it, pre-trained `tiny` features (norm ~3) against
  random-init ones (~0.16) change the head's effective step 350-fold, and fine-tuning from a
  MoCo checkpoint on 10% of builtin:digits scored below random init (81% vs 88%). Its
  running statistics follow the features as they change and are folded into the head at the
  end, so ``classifier.pt`` keeps a plain linear head;
* SGD with Nesterov momentum 0.9, weight decay 5e-4 on weights (not on biases or
  BatchNorm, as pre-training), a per-step cosine from ``lr`` to 0 without warm-up;
* ``lr`` (0.1 per batch of 64) for the head and ``lr / 10`` for the backbone, so the
  pre-trained features move slowly while the head, starting from zero, catches up;
* 30 epochs of shuffled batches of 64, the last partial batch dropped, but at least
  ``min_steps`` (500) optimizer steps: a 1% split of a small dataset is one batch, and 30
  steps leave a zero-initialised head untrained. BatchNorm in train mode (its statistics
  adapt to the labelled images). Measured before fixing these defaults (10% labels, 500
  steps): head lr 0.01 / 0.05 / 0.1 gave 59 / 90 / 93% on builtin:digits from random init;
  on builtin:shapes from a MoCo v2 checkpoint, 30 epochs at 0.01 gave 17% and 100 at 0.1 37%;
* light augmentation on the device, in batches: random resized crop of scale (0.5, 1),
  aspect (3/4, 4/3), horizontal flip with p 0.5 (``vipr.data.augment``); the test split
  gets the evaluation transform (resize) as every evaluation does;
* bf16 autocast where ``resolve_precision`` says so (fp16 with a gradient scaler),
  channels-last memory.

The result is saved as ``classifier.pt`` in the format of ``vipr eval linear``. ``vipr eval finetune``
runs this recipe under a strategy: ``full`` (the default) runs it; ``auto`` first checks it against the
frozen features' linear probe on held-out labels and keeps the probe where it scores higher
(vipr.eval.finetune_select, with what it was measured to gain and to lose).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vipr.config import config_digest
from vipr.data.augment import ViewSpec
from vipr.data.loader import BatchIterator
from vipr.data.types import ImageSplit
from vipr.engine.checkpoint import CHECKPOINT_NAME, RunRecord
from vipr.engine.device import resolve_precision
from vipr.engine.optim import param_groups
from vipr.engine.trainer import LoopSettings, Trainer
from vipr.errors import ConfigError, ViprError
from vipr.fsutil import atomic_write_text
from vipr.eval.features import extract_features
from vipr.eval.finetune_select import STRATEGIES, choose, fit_choice, labelled_split
from vipr.eval.finetune_task import FORMAT as FINETUNE_FORMAT
from vipr.eval.finetune_task import FinetuneTask
from vipr.eval.knn import topk_accuracy
from vipr.eval.linear import fit_standardized, fold_standardization
from vipr.eval.runner import count_classes, labelled_test_rows, labelled_train_rows, prepare, write_run
from vipr.models import Backbone
from vipr.models.init_weights import check_weights_file, initialise

BACKBONE_LR_SCALE = 0.1  # backbone lr / head lr
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
CROP_SCALE = (0.5, 1.0)  # area fraction of the random resized crop
HEAD_INITS = ("zeros", "probe")  # the new head: zero weights, or a linear probe of the frozen features
BACKBONE_NORMS = ("adapt", "frozen")  # backbone BatchNorm: batch statistics while training, or its running ones
SELECTION_NAME = "selection.json"  # auto's choice in the run's train/ folder, while the run is unfinished
RUN_ONLY = ("device",)  # run_finetune arguments a resume may change


def finetune_optimizer(model: Backbone, lr: float, weight_decay: float = WEIGHT_DECAY,
                       backbone_lr_scale: float = BACKBONE_LR_SCALE) -> torch.optim.SGD:
    """SGD, Nesterov: ``lr`` for the head, ``lr * backbone_lr_scale`` for the rest; decay on weights only."""
    head = {id(p) for p in model.head.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head]
    groups = [{**group, "lr": lr * backbone_lr_scale} for group in param_groups(backbone, weight_decay)]
    groups += [{**group, "lr": lr} for group in param_groups(model.head.parameters(), weight_decay)]
    return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM, nesterov=True)


def finetune(model: Backbone, split: ImageSplit, num_classes: int, *, image_size: int, mean, std, epochs: int = 30,
             batch_size: int = 64, lr: float = 0.1, seed: int = 0, device: torch.device | str = "cpu",
             precision: str = "fp32", progress: bool = True, min_steps: int = 500, run_dir: str | Path | None = None,
             config: dict | None = None, resume: bool = False, head_init: str = "zeros",
             backbone_lr_scale: float = BACKBONE_LR_SCALE, backbone_norm: str = "adapt") -> dict:
    """Train ``model`` with a new ``num_classes`` head on every image of ``split`` (see the module doc).

    It runs in the engine (vipr.engine.trainer.Trainer) as a :class:`FinetuneTask`.

    Args:
        split: the labelled training images, (N, 3, H, W) uint8 with labels in [0, num_classes).
        image_size, mean, std: the checkpoint's preprocessing (crop side in px, normalisation).
        run_dir: where a stop (Ctrl-C, SIGTERM) saves the resume state, ``RUN_DIR/checkpoint.pt``;
            None keeps none. ``config``: what the run computes from (plain data; a resume
            continues only under its digest); ``resume``: continue from that state, bit for bit.

        head_init: ``zeros`` (the recipe) or ``probe``: the head starts as a linear probe fitted on the
            frozen features of ``split`` (LP-FT, arXiv 2202.10054). ``backbone_lr_scale``: backbone lr /
            head lr. Both measured against the recipe by benchmarks/finetune_recipe.py (docs/results.md):
            neither ``probe`` nor a scale of 1 beats it beyond the seed spread.
        backbone_norm: ``adapt`` (the recipe: the backbone's BatchNorm layers normalise with batch
            statistics and update their running ones) or ``frozen`` (they keep the start's running
            statistics; their affine weights still train). benchmarks/finetune_resnet.py measures both.

    Returns:
        ``{"train_loss": mean loss of the last epoch, "steps": optimizer steps, "epochs": epochs run}``.
    """
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr)
    if head_init not in HEAD_INITS:
        raise ConfigError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
    if backbone_norm not in BACKBONE_NORMS:
        raise ConfigError(f"backbone_norm must be one of {', '.join(BACKBONE_NORMS)}, got {backbone_norm!r}")
    if not backbone_lr_scale >= 0:
        raise ConfigError(f"backbone_lr_scale must be a number >= 0, got {backbone_lr_scale!r}")
    device = torch.device(device)
    model.to(device=device, memory_format=torch.channels_last)
    model.reset_head(num_classes)
    linear = model.head.to(device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    norm = nn.BatchNorm1d(model.feature_dim, affine=False).to(device)  # batch statistics follow the features
    if head_init == "probe":
        _probe_head(model, split, num_classes, linear, norm, image_size, mean, std, device, precision)
    model.head = nn.Sequential(norm, linear)
    loader = BatchIterator(split, min(batch_size, len(split)), shuffle=True, seed=seed, drop_last=True, device=device)
    epochs = max(epochs, -(-min_steps // len(loader)))  # at least min_steps optimizer steps
    views = [ViewSpec(image_size, scale=CROP_SCALE, jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=0.0, gray_p=0.0)]
    generator = torch.Generator().manual_seed(seed)  # crops and flips, the same on any device
    head_modules = set(model.head.modules())  # the head's norm always follows the batch
    frozen = tuple(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and m not in head_modules) if backbone_norm == "frozen" else ()
    task = FinetuneTask(model, views, mean, std, generator, frozen_norms=frozen)
    # no checkpoint at epoch ends: a 1% label split has epochs of one step, and classifier.pt is the product
    settings = LoopSettings(epochs=epochs, precision=resolve_precision(precision, device), log_every=0,
                            progress=progress, seed=seed, name="finetune", epoch_checkpoints=False)
    record = RunRecord(FINETUNE_FORMAT, dict(config or {}), config_digest(dict(config or {})))
    optimizer = finetune_optimizer(model, lr, backbone_lr_scale=backbone_lr_scale)
    trainer = Trainer(task, optimizer, loader, settings, run_dir, record, device, generator)
    if resume:
        trainer.restore(_resume_state(run_dir))
    trainer.fit(lambda record: None)  # no per-epoch log: the run folder holds what it held before the engine
    model.head = fold_standardization(linear, norm.running_mean, (norm.running_var + norm.eps).sqrt()).requires_grad_(True)
    return {"train_loss": task.train_loss(), "steps": trainer.step, "epochs": epochs}


def _probe_head(model, split, num_classes, linear, norm, image_size, mean, std, device, precision) -> None:
    """Set ``linear`` and ``norm``'s running statistics to a linear probe of ``split``'s frozen features
    (evaluation transform, the linear probe's recipe); ``model`` is left in train mode."""
    features = extract_features(model, split.images, image_size=image_size, mean=mean, std=std, device=device,
                                precision=precision, progress=False).to(device)
    fitted, f_mean, f_std = fit_standardized(features, torch.from_numpy(split.labels).long(), num_classes)
    with torch.no_grad():
        norm.running_mean.copy_(f_mean)
        norm.running_var.copy_(f_std ** 2)
        # the norm divides by sqrt(var + eps), the probe by std: rescale so their logits agree
        linear.weight.copy_(fitted.weight * (norm.running_var + norm.eps).sqrt() / f_std)
        linear.bias.copy_(fitted.bias)
    model.train()


def _resume_state(run_dir: str | Path | None) -> Path:
    path = None if run_dir is None else Path(run_dir) / CHECKPOINT_NAME
    if path is None or not path.is_file():
        raise ViprError(f"--resume: no fine-tune state {path or '(no run folder)'}; a fine-tune saves one when "
                        "stopped (Ctrl-C, SIGTERM) and removes it when done: drop --resume to start again")
    return path


def _check_settings(**settings) -> None:
    for name, value in settings.items():
        if not value > 0 or (name != "lr" and int(value) != value):
            kind = "a number > 0" if name == "lr" else "an integer >= 1"
            raise ConfigError(f"--{name.replace('_', '-')} must be {kind}, got {value!r}")


def run_finetune(*, checkpoint: str, data: str, label_split: str | None = None, epochs: int = 30,
                 min_steps: int = 500, batch_size: int = 64, lr: float = 0.1, seed: int = 0, backbone: str | None = None,
                 image_size: int | None = None, out: str | Path | None = None, device: str = "auto",
                 precision: str = "auto", progress: bool = True, init_weights: str | None = None,
                 resume: bool = False, head_init: str = "zeros", backbone_lr_scale: float = BACKBONE_LR_SCALE,
                 backbone_norm: str = "adapt", strategy: str = "full") -> dict:
    """``vipr eval finetune``: fine-tune on the train split (or its ``label_split``), score the test split.

    A stop (Ctrl-C, SIGTERM) saves the training state in ``out/train/checkpoint.pt``;
    ``resume=True`` continues it bit for bit under the same settings (``device`` may change),
    and the state is removed once classifier.pt is written.

    ``init_weights``: a weights file loaded into the backbone before fine-tuning (vipr.models.init_weights;
    e.g. ImageNet weights into ``checkpoint="random"``), its report printed and written to ``out``.
    ``head_init``, ``backbone_lr_scale``, ``backbone_norm``: as :func:`finetune` (its recipe by default).
    ``strategy``: ``auto`` chooses between this fine-tune and the frozen features' linear probe on held-out
    labels (vipr.eval.finetune_select; the choice is in the metrics), ``full`` always fine-tunes.
    Returns the metrics (top1/top5 in %); with ``out``, also writes metrics.json,
    eval_config.json, env.json and classifier.pt (loadable by ``load_backbone``).
    """
    args = {"kind": "finetune", "checkpoint": str(checkpoint), "data": data, "backbone": backbone,
            "image_size": image_size, "label_split": None if label_split is None else str(label_split),
            "epochs": epochs, "min_steps": min_steps, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
            "precision": precision, "init_weights": init_weights, "head_init": head_init,
            "backbone_lr_scale": backbone_lr_scale, "backbone_norm": backbone_norm, "strategy": strategy}
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if init_weights:
        check_weights_file(init_weights)  # before the data is opened
    setup = prepare(checkpoint, data, backbone, image_size, device, precision, progress)
    dataset, card = setup.dataset, setup.card
    if init_weights:
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
        initialise(setup.model, init_weights, card.architecture, out)
    train = labelled_split(dataset.train, labelled_train_rows(dataset, label_split))
    test_rows = labelled_test_rows(dataset)
    test_labels = torch.from_numpy(dataset.test.labels[test_rows]).long()
    num_classes = count_classes(dataset, torch.from_numpy(train.labels), test_labels)
    run_dir = None if out is None else Path(out) / "train"
    config = {k: v for k, v in args.items() if k not in RUN_ONLY}
    inputs = dict(image_size=card.image_size, mean=card.mean, std=card.std, device=setup.device,
                  precision=precision)  # the checkpoint's preprocessing, for training and features

    def recipe(model: Backbone, split: ImageSplit, folder: Path | None) -> dict:
        """The fine-tune of ``model`` on ``split``, its stop state in ``folder``, resumed when one is there."""
        return finetune(model, split, num_classes, **inputs, epochs=epochs, batch_size=batch_size, lr=lr,
                        seed=seed, progress=progress, min_steps=min_steps, run_dir=folder, config=config,
                        resume=resume and folder is not None and (folder / CHECKPOINT_NAME).is_file(),
                        head_init=head_init, backbone_lr_scale=backbone_lr_scale, backbone_norm=backbone_norm)

    if resume and not _has_state(run_dir):
        _resume_state(run_dir)  # raises: nothing to resume
    selection = {"chosen": "full"} if strategy == "full" else _selection(setup.model, train, num_classes, seed,
                                                                          recipe, run_dir, inputs)
    trained = fit_choice(setup.model, train, num_classes, selection["chosen"],
                         lambda model, split: recipe(model, split, run_dir), **inputs)
    features = setup.features(dataset.test, test_rows, progress=progress, desc="test features")  # (N_test, D)
    with torch.no_grad():
        scores = setup.model.head(features.to(setup.device)).cpu()  # (N_test, C), the saved model's logits
    metrics = {**setup.metrics("finetune", args), **topk_accuracy(scores, test_labels), "num_classes": num_classes,
               "num_train": len(train), "num_test": len(test_rows), "label_split": args["label_split"],
               "batch_size": batch_size, "lr": lr, "backbone_lr": lr * backbone_lr_scale,
               "seed": seed, **trained, "strategy": strategy, **selection, "precision": setup.resolved_precision,
               "seconds": setup.seconds()}
    if out is not None:
        write_run(out, args, metrics, classifier=setup,
                  confusion=(scores.argmax(1), test_labels, setup.dataset.classes))
        _remove_state(run_dir)
    return metrics


def _selection(model, train, num_classes, seed, recipe, run_dir: Path | None, inputs: dict) -> dict:
    """``auto``'s choice (finetune_select.choose), kept in ``run_dir/selection.json`` so a resume does not
    choose again; the trial fine-tune's stop state goes to ``run_dir/select``."""
    saved = None if run_dir is None else run_dir / SELECTION_NAME
    if saved is not None and saved.is_file():
        return json.loads(saved.read_text())
    folder = None if run_dir is None else run_dir / "select"
    selection = choose(model, train, num_classes, seed, lambda trial, split: recipe(trial, split, folder), **inputs)
    if saved is not None:
        atomic_write_text(saved, json.dumps(selection))
    return selection


def _has_state(run_dir: Path | None) -> bool:
    """Whether ``run_dir`` holds anything a resume continues: a stop state, or ``auto``'s choice."""
    return run_dir is not None and any(path.is_file() for path in (
        run_dir / CHECKPOINT_NAME, run_dir / "select" / CHECKPOINT_NAME, run_dir / SELECTION_NAME))


def _remove_state(run_dir: Path) -> None:
    """The resume state of a finished fine-tune (classifier.pt holds the result)."""
    (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    (run_dir / SELECTION_NAME).unlink(missing_ok=True)
    (run_dir / "select" / CHECKPOINT_NAME).unlink(missing_ok=True)
    if (run_dir / "select").is_dir() and not any((run_dir / "select").iterdir()):
        (run_dir / "select").rmdir()
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
