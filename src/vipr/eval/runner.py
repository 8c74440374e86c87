"""The job behind ``vipr eval knn|linear``: data -> frozen features -> kNN or linear probe -> metrics.

A checkpoint pre-trained on another dataset is evaluated as transfer: its dataset digest
is recorded, never required to match.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import vipr
from vipr.data.sources import open_dataset
from vipr.data.splits import load_label_split
from vipr.data.types import Dataset
from vipr.engine.checkpoint import FORMAT, save_atomic
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.rundir import environment, write_metrics
from vipr.errors import ConfigError, DataError
from vipr.eval.features import extract_features, load_eval_backbone
from vipr.eval.knn import knn_predict, topk_accuracy
from vipr.eval.linear import train_linear

KINDS = ("knn", "linear")
CLASSIFIER_NAME = "classifier.pt"


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
    start = time.perf_counter()
    dataset = open_dataset(data)
    train_rows, test_rows = _labelled_rows(dataset, label_split)
    model, meta = load_eval_backbone(str(checkpoint), backbone, image_size)
    dev = resolve_device(device)
    extract = dict(image_size=meta["image_size"], mean=meta["mean"], std=meta["std"], batch_size=batch_size,
                   device=dev, precision=precision, progress=progress)
    train_features = extract_features(model, dataset.train.images, indices=train_rows, desc="train features", **extract)
    test_features = extract_features(model, dataset.test.images, indices=test_rows, desc="test features", **extract)
    train_labels = torch.from_numpy(dataset.train.labels[train_rows]).long().to(dev)
    test_labels = torch.from_numpy(dataset.test.labels[test_rows]).long()
    num_classes = max(dataset.num_classes, int(train_labels.max()) + 1, int(test_labels.max()) + 1)
    head, scores, settings = _fit_and_score(kind, train_features.to(dev), train_labels, test_features.to(dev),
                                            num_classes, k=k, temperature=temperature, epochs=epochs)
    metrics = {"kind": kind, **topk_accuracy(scores, test_labels), "checkpoint": str(checkpoint), "data": data,
               "backbone": meta["backbone"], "image_size": meta["image_size"], "num_classes": num_classes,
               "num_train": len(train_rows), "num_test": len(test_rows), "label_split": args["label_split"],
               **settings, "precision": resolve_precision(precision, dev),
               "seconds": round(time.perf_counter() - start, 3)}
    if out is not None:
        out = _start_run_dir(out, args)
        if head is not None:
            save_classifier(out / CLASSIFIER_NAME, model, head, meta, dataset, args, metrics)
            metrics["classifier"] = str(out / CLASSIFIER_NAME)
        write_metrics(out, metrics)
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


def _labelled_rows(dataset: Dataset, label_split: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Train rows to fit on (the label split's, labelled only) and labelled test rows."""
    if dataset.test is None or len(dataset.test) == 0:
        raise DataError(f"{dataset.name} has no test split; evaluation needs a train/test layout "
                        f"(ROOT/train/<class>/ with ROOT/val/ or ROOT/test/, CIFAR, or an npz with x_test/y_test)")
    rows = np.arange(len(dataset.train)) if label_split is None else load_label_split(label_split, dataset)
    train_rows = rows[dataset.train.labels[rows] >= 0]
    test_rows = np.flatnonzero(dataset.test.labels >= 0)
    if len(train_rows) == 0:
        raise DataError(f"no labelled train images in {dataset.name}" + (f" within {label_split}" if label_split else "")
                        + "; kNN and the linear probe need class labels (class folders, CIFAR, npz with y_train)")
    if len(test_rows) == 0:
        raise DataError(f"the test split of {dataset.name} has no labels; evaluation needs labelled test images")
    return train_rows, test_rows


def _start_run_dir(out: str | Path, args: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_config.json").write_text(json.dumps(args, indent=2))
    (out / "env.json").write_text(json.dumps(environment(), indent=2))
    return out


def save_classifier(path: Path, model, head: torch.nn.Linear, meta: dict, dataset: Dataset, args: dict,
                    metrics: dict) -> None:
    """The backbone with the folded probe as its head, in the checkpoint format (no resume state)."""
    num_classes = head.out_features
    model.reset_head(num_classes)
    model.head.load_state_dict(head.state_dict())
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    classifier_meta = {**meta, "num_classes": num_classes, "classes": list(dataset.classes),
                       "parent_checkpoint": args["checkpoint"], "label_split": args["label_split"], "dataset": dataset.name,
                       "dataset_digest": dataset.digest, "parent_dataset": meta.get("dataset"),
                       "parent_dataset_digest": meta.get("dataset_digest"),
                       "eval": {"top1": metrics["top1"], "top5": metrics["top5"]}, "vipr_version": vipr.__version__}
    save_atomic({"format": FORMAT, "meta": classifier_meta, "backbone": state}, path)
