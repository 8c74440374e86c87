"""Runtimes of detection and segmentation models (vipr.transfer), behind the contract of vipr.serve.runtime.

The same three members as a classifier's runtime, with dense inputs and outputs:

* ``info``: a ModelInfo whose ``task`` is detect | instance | segment and whose ``classes`` start
  with "background";
* ``preprocess(canvases)``: uint8 (3, S, S) letterboxed canvases (vipr.serve.inputs.Canvas.pixels)
  -> float32 (B, 3, S, S) in [0, 1]; no mean / std here: transfer models normalise inside;
* ``predict(batch)``: float32 (B, 3, S, S) in [0, 1] -> a segmenter's logits, float32 (B, K, S, S);
  a detector's list of B dicts of numpy arrays: ``boxes`` float32 (N, 4) xyxy in canvas px,
  ``labels`` int64 (N,) class indices 1..K-1, ``scores`` float32 (N,), and for instance models
  ``masks`` float32 (N, 1, S, S) probabilities. The batcher slices a list as it slices rows.

Detectors run in float32 (torchvision's box decoding and NMS in bf16 move boxes by pixels);
segmenters follow the classifier's precision rule. The ONNX file of a detector takes one image
per call (vipr.serve.dense_export), so its runtime loops over the batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vipr.engine.card import ModelCard
from vipr.engine.device import precision_autocast, resolve_device, resolve_precision
from vipr.serve.runtime import ModelInfo, onnx_providers

_ORT_ERRORS_ONLY = 3  # onnxruntime log level: its warnings on every data-dependent output shape are noise


def to_unit(canvases: list[np.ndarray], size: int) -> np.ndarray:
    """uint8 (3, S, S) canvases -> float32 (B, 3, S, S) in [0, 1]; ValueError naming a canvas of another size."""
    if not canvases:
        raise ValueError("no images to preprocess")
    for k, canvas in enumerate(canvases):
        if canvas.shape != (3, size, size):
            raise ValueError(f"image {k} is {tuple(canvas.shape)}, not a (3, {size}, {size}) canvas; "
                             "letterbox it first (vipr.serve.inputs.decode_canvas_image)")
    return np.stack(canvases).astype(np.float32) * np.float32(1 / 255)


def dense_info(card: ModelCard, platform: str) -> ModelInfo:
    return ModelInfo.from_card(card, output_dim=card.num_classes, platform=platform)


class DenseTorchRuntime:
    """A vipr.transfer model in eval mode on ``device``."""

    runtime_name = "torch"

    def __init__(self, model: torch.nn.Module, card: ModelCard, precision: str = "auto", device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.task = card.task
        self.precision = resolve_precision(precision, self.device) if card.task == "segment" else "fp32"
        self.info = dense_info(card, platform="pytorch_torchscript")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, precision: str = "auto", device: str = "cpu"):
        from vipr.transfer.build import load_transfer_model

        model, card = load_transfer_model(path)
        return cls(model, card, precision, device)

    def preprocess(self, canvases: list[np.ndarray]) -> np.ndarray:
        return to_unit(canvases, self.info.image_size)

    def predict(self, batch: np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)  # (B, 3, S, S)
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            if self.task == "segment":
                return self.model(x).float().cpu().numpy()  # (B, K, S, S)
            return [{key: value.cpu().numpy() for key, value in found.items()} for found in self.model(list(x))]


class DenseOnnxRuntime:
    """An onnxruntime session on an exported detection or segmentation model (vipr.serve.dense_export)."""

    runtime_name = "onnx"

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 0, device: str = "cpu"):
        import onnxruntime

        from vipr.serve.export import INPUT_NAME, read_onnx_metadata

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
        options.log_severity_level = _ORT_ERRORS_ONLY
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=onnx_providers(device))
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.path, self.input_name = Path(onnx_path), INPUT_NAME
        self.info = ModelInfo.from_export(read_onnx_metadata(onnx_path), platform="onnxruntime_onnx")
        self.output_names = [output.name for output in self.session.get_outputs()]

    def preprocess(self, canvases: list[np.ndarray]) -> np.ndarray:
        return to_unit(canvases, self.info.image_size)

    def predict(self, batch: np.ndarray):
        x = np.ascontiguousarray(batch, dtype=np.float32)  # (B, 3, S, S)
        if self.info.task == "segment":
            return self.session.run(None, {self.input_name: x})[0]  # (B, K, S, S)
        return [dict(zip(self.output_names, self.session.run(None, {self.input_name: image}))) for image in x]
