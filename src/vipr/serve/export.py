"""Export a vipr checkpoint to ONNX or TorchScript, with the preprocessing metadata inside and beside it.

The exported graph takes float32 NCHW images at ``image_size`` x ``image_size``, already
normalised with the metadata's mean/std, any batch size, and returns class logits (a
classifier) or pooled features (a pre-trained backbone without a head). The metadata
(classes, image_size, mean, std, backbone, model name/version, and ``preprocessing``: the
whole rule from an image file to the input tensor, as ``vipr serve`` applies it) travels in
the file (ONNX ``metadata_props``; TorchScript ``_extra_files["vipr.json"]``) and beside it
as FILE.json, so the exported file alone is enough to prepare its inputs.

Every export is checked before it is kept: the file, run by its own runtime (onnxruntime,
``torch.jit.load``), must reproduce PyTorch's outputs on a random batch of another size
than the traced one.

Detection and segmentation models (card task detect | instance | segment) export to ONNX by
vipr.serve.dense_export, with their own inputs, outputs, metadata and check.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

import vipr
from vipr.engine.card import DENSE_TASKS, ModelCard
from vipr.engine.checkpoint import load_card
from vipr.errors import ExportError
from vipr.fsutil import atomic_write_text
from vipr.models.loading import load_backbone

FORMATS = ("onnx", "torchscript")
EXPORT_FORMAT = "vipr-export/1"
OPSET = 17
EXTRA_FILE = "vipr.json"
INPUT_NAME = "input"
_TRACE_BATCH, _CHECK_BATCH = 2, 3  # a check batch unlike the traced one proves the batch axis dynamic
_TOLERANCE = 1e-3  # max |exported - torch|, relative to the largest |output| (at least 1)


def export_model(path: str | os.PathLike, fmt: str, out: str | os.PathLike, *, name: str | None = None,
                 version: str | int | None = None, seed: int = 0) -> dict:
    """Export checkpoint ``path`` as ``fmt`` to ``out`` (+ ``out``.json); returns the metadata and the check."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if load_card(path).task in DENSE_TASKS:  # a vipr.transfer detector or segmenter
        from vipr.serve.dense_export import export_dense

        return export_dense(path, fmt, out, name=name, version=version, seed=seed)
    model, card = load_for_export(path)
    metadata = export_metadata(card, model, fmt, name, version)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = card.image_size
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(_TRACE_BATCH, 3, size, size, generator=generator)
    batch = torch.randn(_CHECK_BATCH, 3, size, size, generator=generator)
    with torch.no_grad(), _quiet_torchscript():
        if fmt == "onnx":
            _export_onnx(model, example, out, metadata)
            exported = _onnx_outputs(out, batch)
        else:
            _export_torchscript(model, example, out, metadata)
            exported = _torchscript_outputs(out, batch)
        check = compare(model(batch).numpy(), exported, out, card.architecture)
    atomic_write_text(f"{out}.json", json.dumps(metadata, indent=2))
    return {**metadata, "file": str(out), **check}


def load_for_export(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelCard]:
    """The model in eval mode and its card (the card's checks guarantee the preprocessing fields)."""
    model, card = load_backbone(path)
    return model.eval(), card


def export_metadata(card: ModelCard, model: torch.nn.Module, fmt: str, name: str | None, version) -> dict:
    """The exported file's metadata (format vipr-export/1): what a client needs, from the card."""
    size, num_classes = card.image_size, card.num_classes
    return {"format": EXPORT_FORMAT, "export_format": fmt, "model_name": name,
            "model_version": None if version is None else str(version), "backbone": card.architecture,
            "backbone_kwargs": card.architecture_kwargs, "image_size": size, "mean": list(card.mean),
            "std": list(card.std), "classes": list(card.classes) if num_classes else [],
            "num_classes": num_classes, "output": "logits" if num_classes else "features",
            "output_dim": num_classes or int(model.feature_dim),
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32",
                      "layout": "NCHW", "normalised": True},
            "preprocessing": preprocessing_rule(size, card.mean, card.std),
            "dataset": card.dataset, "dataset_digest": card.dataset_digest,
            "config_hash": card.config_hash, "vipr_version": vipr.__version__}


def preprocessing_rule(size: int, mean, std) -> dict:
    """Image file -> input tensor, step by step: what vipr.serve (inputs.decode_image, runtime.preprocess) does.

    The centre square, then one resize to ``size`` (the evaluation transform of training,
    vipr.data.augment.eval_transform), then per-channel normalisation of pixel / 255.
    """
    return {"color": "RGB", "channel_order": ["R", "G", "B"], "source_dtype": "uint8", "source_range": [0, 255],
            "crop": {"kind": "centre square", "side": "min(height, width)",
                     "box": "left = (width - side) // 2, top = (height - side) // 2"},
            "resize": {"kind": "the whole crop to size x size", "size": [size, size], "interpolation": "bilinear",
                       "antialias": True, "align_corners": False},  # as PIL's BILINEAR and torch's antialias=True
            "scale": 1 / 255, "mean": list(mean), "std": list(std),
            "normalise": "(pixel / 255 - mean[c]) / std[c] per channel c",
            "dtype": "float32", "layout": "NCHW",
            "steps": ["decode the image to RGB uint8", "crop the centre square", "resize it to size x size",
                      "divide by 255", "subtract mean and divide by std per channel", "stack as float32 NCHW"]}


def compare(expected: np.ndarray, actual: np.ndarray, out: Path, backbone: str) -> dict:
    """Max |difference| within tolerance, or delete ``out`` and raise: a wrong export must not be served."""
    diff = float(np.abs(expected - actual).max()) if expected.shape == actual.shape else float("inf")
    tolerance = _TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not diff <= tolerance:
        out.unlink(missing_ok=True)
        raise ExportError(f"the exported {out.name} does not reproduce PyTorch: max |difference| {diff:.3g} > "
                          f"{tolerance:.3g} (output shapes {actual.shape} vs {expected.shape}); the file was removed. "
                          f"Try the other --format, or check backbone '{backbone}' for ops the exporter mistranslates")
    return {"max_abs_diff": diff, "tolerance": tolerance}


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an exported ONNX file, from its ``metadata_props``."""
    import onnxruntime

    props = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return json.loads(props.custom_metadata_map[EXTRA_FILE])


def read_torchscript_metadata(path: str | os.PathLike) -> dict:
    extra = {EXTRA_FILE: ""}
    with _quiet_torchscript():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[EXTRA_FILE])


@contextlib.contextmanager
def _quiet_torchscript():
    """torch.jit and the TorchScript-based ONNX exporter warn of their deprecation on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, out: Path, metadata: dict) -> None:
    """The TorchScript-based exporter (``dynamo=False``): the dynamo one needs onnxscript, which vipr does not ship."""
    output = metadata["output"]
    torch.onnx.export(model, (example,), str(out), input_names=[INPUT_NAME], output_names=[output],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}}, opset_version=OPSET,
                      dynamo=False)
    embed_metadata(out, metadata)


def embed_metadata(out: Path, metadata: dict) -> None:
    """Write ``metadata`` into the ONNX file's ``metadata_props``: each key, and all of it as ``vipr.json``."""
    import onnx

    graph = onnx.load(str(out))
    props = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    onnx.helper.set_model_props(graph, {**props, EXTRA_FILE: json.dumps(metadata)})
    onnx.save(graph, str(out))


def _onnx_outputs(out: Path, batch: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: batch.numpy()})[0]


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, out: Path, metadata: dict) -> None:
    traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(out), _extra_files={EXTRA_FILE: json.dumps(metadata)})


def _torchscript_outputs(out: Path, batch: torch.Tensor) -> np.ndarray:
    return torch.jit.load(str(out), map_location="cpu")(batch).numpy()
