"""The jobs behind ``vipr eval``, and the parts every evaluation shares.

``run_eval`` runs kNN and the linear probe (data -> frozen features -> kNN or probe ->
metrics); fine-tuning (:mod:`vipr.eval.finetune`) and few-shot episodes
(:mod:`vipr.eval.fewshot`) have their own runners built from the same parts here: one way
to open the data and the backbone (:func:`prepare`), to pick labelled rows, to extract
features with the checkpoint's preprocessing, to write a run folder and to save
``classifier.pt``. A checkpoint pre-trained on another dataset is evaluated as transfer:
its dataset digest is recorded, never required to match.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vipr.data.sources import open_dataset
from vipr.data.splits import load_label_split
from vipr.data.types import Dataset, ImageSplit
from vipr.engine.card import ModelCard, make_card
from vipr.engine.checkpoint import FORMAT, parent_record, save_atomic
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.rundir import write_environment, write_metrics
from vipr.errors import ConfigError, DataError
from vipr.eval.features import extract_features, load_eval_backbone
from vipr.eval.knn import knn_predict, topk_accuracy
from vipr.eval.linear import train_linear
from vipr.fsutil import atomic_write_text
from vipr.models import Backbone

KINDS = ("knn", "linear")  # run_eval's; finetune and fewshot have their own runners
CLASSIFIER_NAME = "classifier.pt"


@dataclass
class EvalSetup:
    """What every evaluation starts from: the data, the backbone and its card, where it runs."""

    dataset: Dataset
    model: Backbone
    card: ModelCard  # the checkpoint's: image_size, mean/std, architecture, ...
    device: torch.device
    precision: str  # as asked (auto | bf16 | fp16 | fp32); see ``resolved_precision``
    started: float = field(default_factory=time.perf_counter)  # for the "seconds" metric

    @property
    def resolved_precision(self) -> str:
        return resolve_precision(self.precision, self.device)

    def features(self, split: ImageSplit, rows: np.ndarray, *, batch_size: int = 256, progress: bool = True,
                 desc: str = "features") -> torch.Tensor:
        """(len(rows), D) float32 CPU features of ``split`` with the checkpoint's preprocessing."""
        return extract_features(self.model, split.images, indices=rows, image_size=self.card.image_size,
                                mean=self.card.mean, std=self.card.std, batch_size=batch_size,
                                device=self.device, precision=self.precision, progress=progress, desc=desc)

    def metrics(self, kind: str, args: dict) -> dict:
        """The fields every evaluation reports, before its own."""
        return {"kind": kind, "checkpoint": args["checkpoint"], "data": args["data"],
                "backbone": self.card.architecture, "image_size": self.card.image_size, "device": str(self.device)}

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def prepare(checkpoint: str, data: str, backbone: str | None = None, image_size: int | None = None,
            device: str = "auto", precision: str = "auto", progress: bool = True) -> EvalSetup:
    """Open ``data`` (it must have a test split) and the backbone to evaluate (a file, run folder or "random");
    ``progress`` False: no decoding bar, even on a terminal (``--no-progress``)."""
    started = time.perf_counter()
    dataset = open_dataset(data, progress=progress)
    if dataset.test is None or len(dataset.test) == 0:
        raise DataError(f"{dataset.name} has no test split; evaluation needs a train/test layout "
                        f"(ROOT/train/<class>/ with ROOT/val/ or ROOT/test/, CIFAR, or an npz with x_test/y_test)")
    model, card = load_eval_backbone(str(checkpoint), backbone, image_size)
    return EvalSetup(dataset, model, card, resolve_device(device), precision, started)


def run_eval(
    kind: str,
    *,
    checkpoint: str,
    data: str,
    backbone: str | None = None,
    image_size: int | None = None,
    label_split: str | None = None,
    out: str | Path | None = None,
    k: int = 200,
    temperature: float = 0.07,
    epochs: int = 100,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` (a file, a run folder or ``"random"``) on ``data``'s test split.

    kNN or the linear probe is fitted on the train split, or on its ``label_split`` subset.
    Returns the metrics (top1/top5 in %); with ``out``, also writes metrics.json,
    eval_config.json, env.json and, for ``linear``, classifier.pt: the backbone with the
    probe as its head, loadable by ``load_backbone`` (its forward gives the logits scored here).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown evaluation '{kind}'; use one of {', '.join(KINDS)}")
    args = {"kind": kind, "checkpoint": str(checkpoint), "data": data, "backbone": backbone, "image_size": image_size,
            "label_split": None if label_split is None else str(label_split), "k": k, "temperature": temperature,
            "epochs": epochs, "batch_size": batch_size, "device": device, "precision": precision}
    setup = prepare(checkpoint, data, backbone, image_size, device, precision, progress)
    train_rows, test_rows = labelled_train_rows(setup.dataset, label_split), labelled_test_rows(setup.dataset)
    extract = dict(batch_size=batch_size, progress=progress)
    train_features = setup.features(setup.dataset.train, train_rows, desc="train features", **extract)
    test_features = setup.features(setup.dataset.test, test_rows, desc="test features", **extract)
    train_labels = torch.from_numpy(setup.dataset.train.labels[train_rows]).long().to(setup.device)
    test_labels = torch.from_numpy(setup.dataset.test.labels[test_rows]).long()
    num_classes = count_classes(setup.dataset, train_labels, test_labels)
    head, scores, settings = _fit_and_score(kind, train_features.to(setup.device), train_labels,
                                            test_features.to(setup.device), num_classes, k=k,
                                            temperature=temperature, epochs=epochs)
    metrics = {**setup.metrics(kind, args), **topk_accuracy(scores, test_labels), "num_classes": num_classes,
               "num_train": len(train_rows), "num_test": len(test_rows), "label_split": args["label_split"],
               **settings, "precision": setup.resolved_precision, "seconds": setup.seconds()}
    if head is not None:
        attach_head(setup.model, head)
    if out is not None:
        write_run(out, args, metrics, classifier=setup if head is not None else None,
                  confusion=(scores.argmax(1), test_labels, setup.dataset.classes))
    return metrics


def _fit_and_score(kind: str, train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   num_classes: int, *, k: int, temperature: float, epochs: int):
    """(linear head or None, (N_test, C) scores, the settings to report)."""
    if kind == "knn":
        scores = knn_predict(train_features, train_labels, test_features, k=k, temperature=temperature,
                             num_classes=num_classes)
        return None, scores, {"k": min(k, len(train_features)), "temperature": temperature}
    head = train_linear(train_features, train_labels, num_classes, epochs=epochs)
    return head, head(test_features), {"epochs": epochs}


def labelled_train_rows(dataset: Dataset, label_split: str | None) -> np.ndarray:
    """Train rows to fit on: the label split's (or all), labelled ones only."""
    rows = np.arange(len(dataset.train)) if label_split is None else load_label_split(label_split, dataset)
    rows = rows[dataset.train.labels[rows] >= 0]
    if len(rows) == 0:
        raise DataError(f"no labelled train images in {dataset.name}" + (f" within {label_split}" if label_split else "")
                        + "; evaluation needs class labels (class folders, CIFAR, npz with y_train)")
    return rows


def labelled_test_rows(dataset: Dataset) -> np.ndarray:
    """The labelled rows of the test split (``prepare`` has checked there is one)."""
    rows = np.flatnonzero(dataset.test.labels >= 0)
    if len(rows) == 0:
        raise DataError(f"the test split of {dataset.name} has no labels; evaluation needs labelled test images")
    return rows


def count_classes(dataset: Dataset, *labels: torch.Tensor) -> int:
    """Classes the head scores: the dataset's, or more if a label is out of its range."""
    return max([dataset.num_classes, *(int(y.max()) + 1 for y in labels if len(y))])


def attach_head(model: Backbone, head: nn.Linear) -> None:
    """Make ``head`` (a trained ``nn.Linear`` on features) the classifier of ``model``."""
    model.reset_head(head.out_features)
    model.head.load_state_dict(head.state_dict())


def write_run(out: str | Path, args: dict, metrics: dict, classifier: EvalSetup | None = None,
              confusion: tuple | None = None) -> Path:
    """The run folder: eval_config.json, env.json, metrics.json, and, given ``classifier``, its
    model (backbone + head) as classifier.pt, whose path then joins ``metrics``. ``confusion``:
    (predictions (N,), labels (N,), class names) of a classification, drawn as plots/confusion.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval_config.json", json.dumps(args, indent=2))
    write_environment(out)
    if classifier is not None:
        save_classifier(out / CLASSIFIER_NAME, classifier.model, classifier.card, classifier.dataset, args, metrics)
        metrics["classifier"] = str(out / CLASSIFIER_NAME)
    if confusion is not None:
        _plot_confusion(out, *confusion, num_classes=metrics["num_classes"])
    write_metrics(out, metrics)
    return out


def _plot_confusion(out: Path, predictions: torch.Tensor, labels: torch.Tensor, classes: list[str],
                    num_classes: int) -> None:
    from vipr.plots import confusion_matrix, write_confusion  # matplotlib only once a run is written

    write_confusion(out, confusion_matrix(predictions.cpu().numpy(), labels.cpu().numpy(), num_classes), classes)


def save_classifier(path: Path, model: Backbone, card: ModelCard, dataset: Dataset, args: dict, metrics: dict) -> None:
    """The backbone with its classification head, in the checkpoint format (no resume state).

    Its card keeps the backbone's architecture, preprocessing, method and config; the data,
    classes and scores are the evaluation's, and ``parent`` names the checkpoint it came from.
    """
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    classifier = make_card(
        architecture=card.architecture, architecture_kwargs=card.architecture_kwargs, image_size=card.image_size,
        mean=card.mean, std=card.std, method=card.method, num_classes=model.num_classes, classes=dataset.classes,
        dataset=dataset.name, dataset_digest=dataset.digest, config=card.config, config_hash=card.config_hash,
        parent=parent_record(args["checkpoint"]), label_split=args.get("label_split"),
        evaluation={"kind": metrics["kind"], "top1": metrics["top1"], "top5": metrics["top5"]},
        extra={**card.extra, "parent_dataset": card.dataset, "parent_dataset_digest": card.dataset_digest})
    save_atomic({"format": FORMAT, "card": classifier.to_dict(), "backbone": state}, path)
