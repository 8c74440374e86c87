"""The distillation job: pre-training's trainer (vipr.pretrain.build_trainer) with a distillation method.

Everything but three steps is pre-training's: the checks before the run folder (the teacher
fits the run: :func:`check_distill_config`), the card, which names the teacher as the parent
(path and sha256) and describes it in ``card.extra["teacher"]`` (and, for a genotype student,
carries the darts_net kwargs), and, on ``--resume``, the check that the teacher file is the one
the run started with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vipr.distill.settings import DistillConfig, distill_methods
from vipr.distill.student import check_student_genotype
from vipr.distill.teacher import check_teacher, require_classifier, teacher_card
from vipr.engine import checkpoint as ckpt
from vipr.engine import distributed as dist
from vipr.engine.card import ModelCard
from vipr.engine.checkpoint import CHECKPOINT_NAME
from vipr.engine.device import resolve_device
from vipr.engine.progress import MetricsLog, last_epoch_record
from vipr.engine.rundir import check_run_dir, prepare_run_dir, write_metrics
from vipr.errors import ConfigError
from vipr.eval.monitor import BEST_NAME
from vipr.fsutil import atomic_write_text
from vipr.pretrain import PretrainConfig, build_trainer, open_run_dataset, train_labels


def check_distill_config(config: PretrainConfig) -> ModelCard:
    """The teacher's card, once it is known to fit ``config``; a ConfigError naming the fix otherwise."""
    method = config.method
    if not isinstance(method, DistillConfig):
        raise ConfigError(f"method {method.name} is not a distillation method; use one of "
                          f"{', '.join(distill_methods())} (or `vipr pretrain --method {method.name}`)")
    card = teacher_card(method.teacher)
    check_teacher(card, method.teacher, config.data.image_size)
    if method.classifier_needed():
        require_classifier(card, method.teacher, method.classifier_needed())
    if method.student_genotype and config.model.init_weights:
        raise ConfigError("model.init_weights cannot start a genotype student (method.student_genotype); drop one")
    check_student_genotype(method)
    return card


def run_distill(config: PretrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Distil ``config.method.teacher`` into the student; returns the final metrics (also in OUT/metrics.json)."""
    if config.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {config.train.epochs}")
    card = check_distill_config(config)  # before the run folder
    device = resolve_device(config.train.device)
    dist.init_from_env(device.type)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.train.seed)
    check_run_dir(out_dir, resume, CHECKPOINT_NAME)  # before a long store build
    dataset = open_run_dataset(config)
    check_classes(config, card, dataset)  # before the run folder too
    out = prepare_run_dir(out_dir, config, resume, checkpoint_name=CHECKPOINT_NAME)
    if dist.is_main() and dataset.skipped:
        atomic_write_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in dataset.skipped))
    trainer = build_trainer(config, dataset, device, out, resume)
    trainer.card = student_card(trainer.card, trainer.model)
    if resume:
        check_same_teacher(out / CHECKPOINT_NAME, trainer.card)
        trainer.restore(out / CHECKPOINT_NAME)
    trainer.fit(MetricsLog(out / "metrics.jsonl", enabled=dist.is_main()))
    best = getattr(trainer.monitor, "best", None)
    metrics = {"steps": trainer.step, "epochs": config.train.epochs, "device": str(device),
               **last_epoch_record(out / "metrics.jsonl"), "checkpoint": str(out / CHECKPOINT_NAME),
               "teacher": trainer.card.parent.checkpoint, "skipped_images": len(dataset.skipped),
               **({} if best is None else {"knn_best_top1": best, "best_checkpoint": str(out / BEST_NAME)})}
    if dist.is_main():
        write_metrics(out, metrics)
    return metrics


def check_classes(config: PretrainConfig, card: ModelCard, dataset) -> None:
    """Labels index the teacher's classes: a KD cross-entropy term needs the data's classes to be the teacher's."""
    method = config.method
    uses_labels = method.classifier_needed() and getattr(method, "alpha", 1.0) < 1
    if not uses_labels or not (train_labels(config, dataset) >= 0).any():
        return
    if tuple(dataset.classes) != tuple(card.classes):
        ours, theirs = ", ".join(card.classes[:4]), ", ".join(dataset.classes[:4])
        raise ConfigError(f"teacher {method.teacher} predicts {len(card.classes)} classes ({ours}...) but "
                          f"{config.data.source} has {len(dataset.classes)} ({theirs}...): its labels cannot supervise "
                          "the student's head; pass --set method.alpha=1 (logits only) or data labelled with the "
                          "teacher's classes")


def student_card(card: ModelCard, method) -> ModelCard:
    """``card`` with the teacher as parent and in ``extra``, and a genotype student's darts_net kwargs."""
    teacher = method.teacher
    parent = ckpt.parent_record(str(teacher.path))
    student = method.deployable()
    extra = {**card.extra, "teacher": {**teacher.describe(), "sha256": parent.sha256},
             "params": int(sum(p.numel() for p in student.parameters()))}
    changes = {"parent": parent, "extra": extra}
    if method.student_kwargs is not None:
        changes.update(architecture="darts_net", architecture_kwargs=method.student_kwargs)
    return ModelCard.from_dict(replace(card, **changes).to_dict(), source="the distilled student's card")


def check_same_teacher(path: Path, card: ModelCard) -> None:
    """A resumed run must distil the same teacher file (method.teacher may name a moved or re-registered one)."""
    saved = ckpt.load_card(path).extra.get("teacher", {}).get("sha256")
    now = card.extra["teacher"]["sha256"]
    if saved and saved != now:
        raise ConfigError(f"--resume: teacher {card.extra['teacher']['source']} is not the file this run started "
                          f"with (sha256 {now[:12]}, the checkpoint's {saved[:12]}); resume with that teacher, or "
                          "start a new run")

