"""ONNX export of detection and segmentation models (vipr.transfer), checked against PyTorch before it is kept.

* A segmenter (fcn, aspp) exports as it runs: float32 (B, 3, S, S) images in [0, 1] -> ``logits``
  (B, K, S, S), any batch size; checked as a classifier is (vipr.serve.export.compare).
* A detector (faster_rcnn, mask_rcnn, retinanet) exports torchvision's whole model, transform,
  NMS and box decoding included, at its fixed canvas: ONE float32 (3, S, S) image in [0, 1] per
  call -> ``boxes`` (N, 4) xyxy canvas px, ``labels`` (N,) int64, ``scores`` (N,) and, for
  mask_rcnn, ``masks`` (N, 1, S, S) probabilities, in the order the PyTorch model returns them
  (RetinaNet's scores come before its labels), N data-dependent. The TorchScript-based exporter
  (``dynamo=False``, opset 17) traces torchvision's export paths; a batch axis it cannot: one
  image per call, and a server runs a batch as a loop (vipr.serve.dense_runtime).

The detector check runs both on a random image other than the traced one and matches every
detection to its twin (order may differ among near-equal scores): same label, box corners within
``BOX_TOLERANCE`` x S px, score within ``SCORE_TOLERANCE``, mask probabilities within
``MASK_TOLERANCE``. float32 reordering between the two runtimes moves boxes by ~1e-5 px and
scores by ~1e-7 (measured on the 64 px scenes models), so 1e-3 of the side (0.064 px at 64 px,
a quarter pixel at 256) flags a real mistranslation while staying far from rounding noise. Two
kinds of detection may lack a twin, since near-equal scores fall on either side of a boundary
differently: one within SCORE_TOLERANCE of the model's score threshold, and, when a side holds
the model's full detections per image, one within SCORE_TOLERANCE of that side's lowest score.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

import vipr
from vipr.engine.card import ModelCard
from vipr.errors import ExportError
from vipr.fsutil import atomic_write_text
from vipr.serve.export import EXPORT_FORMAT, INPUT_NAME, OPSET, _export_onnx, _onnx_outputs, compare, embed_metadata

BOX_TOLERANCE = 1e-3  # of the canvas side S, px
SCORE_TOLERANCE = 1e-3  # probability
MASK_TOLERANCE = 1e-3  # probability, per pixel
_TRACE_BATCH, _CHECK_BATCH = 2, 3  # segmenters: a check batch unlike the traced one proves the batch axis dynamic


def export_dense(path, fmt: str, out, *, name: str | None = None, version=None, seed: int = 0) -> dict:
    """Export the transfer checkpoint ``path`` as ONNX to ``out`` (+ ``out``.json); the metadata and the check."""
    from vipr.transfer.build import load_transfer_model

    model, card = load_transfer_model(path)
    if fmt != "onnx":
        raise ExportError(f"a {card.task} model ({card.architecture}) exports to ONNX only; use --format onnx, "
                          "or serve the checkpoint with --runtime torch")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns of every shape-dependent branch torchvision takes
        if card.task == "segment":
            metadata, check = _segmenter(model, card, out, generator, name, version)
        else:
            metadata, check = _detector(model, card, out, generator, name, version)
    atomic_write_text(f"{out}.json", json.dumps(metadata, indent=2))
    return {**metadata, "file": str(out), **check}


def _segmenter(model, card: ModelCard, out: Path, generator, name, version) -> tuple[dict, dict]:
    size = card.image_size
    example = torch.rand(_TRACE_BATCH, 3, size, size, generator=generator)
    batch = torch.rand(_CHECK_BATCH, 3, size, size, generator=generator)
    metadata = dense_metadata(card, name, version, ["logits"])
    _export_onnx(model, example, out, metadata)
    return metadata, compare(model(batch).numpy(), _onnx_outputs(out, batch), out, card.architecture)


def _detector(model, card: ModelCard, out: Path, generator, name, version) -> tuple[dict, dict]:
    size = card.image_size
    example, sample = (torch.rand(3, size, size, generator=generator) for _ in range(2))
    outputs = list(model([example])[0])  # the dict's order is the graph's output order
    metadata = dense_metadata(card, name, version, outputs)
    torch.onnx.export(model, ([example],), str(out), input_names=[INPUT_NAME], output_names=outputs,
                      opset_version=OPSET, dynamo=False)
    embed_metadata(out, metadata)
    expected = {key: value.numpy() for key, value in model([sample])[0].items()}
    spec = card.architecture_kwargs
    check = compare_detections(expected, _onnx_detections(out, sample.numpy()), out, card.architecture, size,
                               score_thresh=spec["score_thresh"], detections_per_img=spec["detections_per_img"])
    return metadata, check


def _onnx_detections(out: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: it warns of each data-dependent output shape
    session = onnxruntime.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: image})))


def compare_detections(expected: dict, actual: dict, out: Path, kind: str, size: int, *, score_thresh: float = 0.0,
                       detections_per_img: int | None = None) -> dict:
    """Match each PyTorch detection to an exported twin (module docstring); delete ``out`` and raise if one lacks it.

    Args:
        expected, actual: ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,), optionally ``masks``
            (N, 1, S, S), of PyTorch and of the exported file on the same image.
        score_thresh, detections_per_img: the model's (its spec's) filters, whose boundaries excuse a twin.
    """
    pairs, unmatched_expected, unmatched_actual = _match(expected, actual, BOX_TOLERANCE * size)
    near_cut = all(_at_boundary(found["scores"], rows, score_thresh, detections_per_img)
                   for found, rows in ((expected, unmatched_expected), (actual, unmatched_actual)))
    box_diff = max((float(np.abs(expected["boxes"][i] - actual["boxes"][j]).max()) for i, j in pairs), default=0.0)
    score_diff = max((abs(float(expected["scores"][i] - actual["scores"][j])) for i, j in pairs), default=0.0)
    mask_diff = max((float(np.abs(expected["masks"][i] - actual["masks"][j]).max()) for i, j in pairs
                     if "masks" in expected), default=0.0)
    if not near_cut or mask_diff > MASK_TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportError(f"the exported {out.name} does not reproduce PyTorch's {kind}: {len(unmatched_expected)} "
                          f"of {len(expected['scores'])} PyTorch and {len(unmatched_actual)} of "
                          f"{len(actual['scores'])} exported detections without a twin (box corners within "
                          f"{BOX_TOLERANCE * size:.3g} px, scores within {SCORE_TOLERANCE}), max mask difference "
                          f"{mask_diff:.3g}; the file was removed. Serve it with --runtime torch")
    return {"max_abs_diff": box_diff, "tolerance": BOX_TOLERANCE * size, "max_score_diff": score_diff,
            "score_tolerance": SCORE_TOLERANCE, "max_mask_diff": mask_diff, "detections_compared": len(pairs),
            "detections_at_cut": len(unmatched_expected) + len(unmatched_actual)}


def _match(expected: dict, actual: dict, box_tolerance: float) -> tuple[list, list, list]:
    """Greedy, highest PyTorch score first: (matched (i, j) pairs, unmatched rows of expected, of actual)."""
    free = np.ones(len(actual["scores"]), bool)
    pairs, missing = [], []
    for i in np.argsort(-expected["scores"], kind="stable"):
        distance = np.abs(actual["boxes"] - expected["boxes"][i]).max(axis=1) if free.any() else np.zeros(0)
        close = free & (actual["labels"] == expected["labels"][i]) & (distance <= box_tolerance) & \
            (np.abs(actual["scores"] - expected["scores"][i]) <= SCORE_TOLERANCE)
        if close.any():
            j = int(np.flatnonzero(close)[np.argmin(distance[close])])
            free[j] = False
            pairs.append((int(i), j))
        else:
            missing.append(int(i))
    return pairs, missing, np.flatnonzero(free).tolist()


def _at_boundary(scores: np.ndarray, rows: list[int], score_thresh: float, detections_per_img: int | None) -> bool:
    """Whether each unmatched row scores within SCORE_TOLERANCE of the threshold, or of the lowest of a full set."""
    if not rows:
        return True
    at_threshold = np.abs(scores[rows] - score_thresh) <= SCORE_TOLERANCE
    full = detections_per_img is not None and len(scores) >= detections_per_img
    at_cut = full & (scores[rows] <= scores.min() + SCORE_TOLERANCE)
    return bool((at_threshold | at_cut).all())


def dense_metadata(card: ModelCard, name: str | None, version, outputs: list[str]) -> dict:
    """The exported file's metadata (vipr-export/1 with ``task``): what a client needs, from the card."""
    size, spec, segment = card.image_size, card.architecture_kwargs, card.task == "segment"
    shape = ["batch", 3, size, size] if segment else [3, size, size]
    return {"format": EXPORT_FORMAT, "export_format": "onnx", "model_name": name,
            "model_version": None if version is None else str(version), "task": card.task,
            "architecture": card.architecture, "backbone": spec.get("backbone"),
            "backbone_kwargs": spec.get("backbone_kwargs"), "architecture_kwargs": spec, "image_size": size,
            "mean": list(card.mean), "std": list(card.std), "classes": list(card.classes),
            "num_classes": card.num_classes, "category_ids": card.extra.get("category_ids"),
            "output": "logits" if segment else "detections", "output_dim": card.num_classes, "outputs": outputs,
            "score_thresh": spec.get("score_thresh"), "detections_per_img": spec.get("detections_per_img"),
            "input": {"name": INPUT_NAME, "shape": shape, "dtype": "float32", "layout": "NCHW" if segment else "CHW",
                      "normalised": False, "range": [0, 1], "images_per_call": "batch" if segment else 1},
            "preprocessing": letterbox_rule(size), "dataset": card.dataset, "dataset_digest": card.dataset_digest,
            "config_hash": card.config_hash, "vipr_version": vipr.__version__}


def letterbox_rule(size: int) -> dict:
    """Image file -> input and outputs -> the image's pixels: what vipr.serve does (vipr.data.dense.canvas)."""
    return {"color": "RGB", "channel_order": ["R", "G", "B"], "source_dtype": "uint8", "source_range": [0, 255],
            "letterbox": {"canvas": [size, size], "scale": f"{size} / max(height, width)",
                          "resized": "h = round(height * scale), w = round(width * scale), each in 1..size",
                          "interpolation": "bilinear (PIL)", "placement": "top-left", "padding": 0},
            "scale": 1 / 255, "normalise": "none: the model normalises inside with mean and std",
            "dtype": "float32",
            "to_source": {"boxes": "clip x to [0, w] and y to [0, h], drop empty boxes, then x * width / w and "
                                   "y * height / h",
                          "masks_and_label_maps": "crop [:h, :w], resize nearest to (height, width); "
                                                  "masks: probability > 0.5"}}
