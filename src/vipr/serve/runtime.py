"""Runtimes that serve one model: run a normalised batch, return its logits (or features).

Runtimes are registered (``register_runtime`` / ``create_runtime`` / ``list_runtimes``: torch,
onnx) and share one contract, so the batcher and the app never know which one runs:

* ``info``: the preprocessing metadata that travels with the weights (classes, image_size,
  mean, std) and what the model outputs;
* ``preprocess(images)``: uint8 (3, H, W) arrays -> float32 (B, 3, S, S), normalised, via
  :func:`vipr.data.augment.eval_transform` (the evaluation preprocessing of training);
* ``predict(batch)``: float32 (B, 3, S, S) -> float32 (B, C) numpy.

``predict`` is called from one thread at a time (the batcher's worker). A runtime class is built
by ``open(path, *, cache_dir, device)`` and carries ``device`` (for the serving message). A
detection or segmentation checkpoint (``info.task`` detect | instance | segment) opens as the
same runtime's dense variant (vipr.serve.dense_runtime), whose contract is written there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vipr.data.augment import eval_transform
from vipr.engine.card import ModelCard
from vipr.engine.device import precision_autocast, resolve_device
from vipr.config import suggest
from vipr.errors import ConfigError, ExportError
from vipr.fsutil import atomic_path, cache_root, file_sha256

_RUNTIMES: dict[str, type] = {}  # name -> runtime class, filled by register_runtime


def register_runtime(name: str, summary: str):
    """Class decorator: serve with ``cls`` under ``--runtime name``.

    ``cls.open(path, *, cache_dir, device)`` builds it from a checkpoint (or a file of its own
    format) and the instance follows the contract of this module's docstring; ``summary`` is
    its line in ``vipr serve --help``."""

    def wrap(cls: type) -> type:
        cls.runtime_name, cls.summary = name, summary
        _RUNTIMES[name] = cls
        return cls

    return wrap


def list_runtimes() -> list[str]:
    """Names ``vipr serve --runtime`` accepts (the default, onnx, first)."""
    return sorted(_RUNTIMES, key=lambda name: (name != "onnx", name))


def check_runtime(kind: str) -> None:
    """ConfigError naming ``kind`` and the registered runtimes unless it is one."""
    if kind not in _RUNTIMES:
        raise ConfigError(f"unknown runtime '{kind}'{suggest(str(kind), list_runtimes())}")


def runtime_summary(name: str) -> str:
    return _RUNTIMES[name].summary


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to prepare inputs and read outputs."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    output: str = "logits"  # "features" for a backbone without a head, "detections" for a detector
    output_dim: int = 0
    platform: str = "pytorch_torchscript"  # the OIP metadata's platform string
    task: str = "classifier"  # the card's: backbone | classifier | detect | instance | segment

    @classmethod
    def from_card(cls, card: ModelCard, output_dim: int, platform: str) -> ModelInfo:
        return cls(image_size=card.image_size, mean=card.mean, std=card.std,
                   classes=card.classes if card.num_classes else (), output=output_name(card.task),
                   output_dim=output_dim, platform=platform, task=card.task)

    @classmethod
    def from_export(cls, metadata: dict, platform: str) -> ModelInfo:
        """From an exported file's metadata (vipr.serve.export.export_metadata, itself built from the card)."""
        num_classes = int(metadata["num_classes"])
        task = metadata.get("task") or ("classifier" if num_classes else "backbone")  # files before dense export
        return cls(image_size=int(metadata["image_size"]), mean=tuple(metadata["mean"]), std=tuple(metadata["std"]),
                   classes=tuple(metadata["classes"]) if num_classes else (), output=output_name(task),
                   output_dim=int(metadata["output_dim"]), platform=platform, task=task)


def output_name(task: str) -> str:
    """What a model of ``task`` outputs: class logits (classifier, per-pixel for segment), features, detections."""
    return {"backbone": "features", "detect": "detections", "instance": "detections"}.get(task, "logits")


def preprocess(images: list[np.ndarray], info: ModelInfo) -> np.ndarray:
    """uint8 (3, H, W) images of any sizes -> float32 (B, 3, S, S), resized and normalised.

    Images already at the model's size are normalised in numpy: request threads then stay out
    of torch's intra-op thread pool, which the model's batches are using (benchmarks/serve.py).
    Other sizes go through ``eval_transform``, the evaluation preprocessing of training.
    """
    if not images:
        raise ValueError("no images to preprocess")
    size = info.image_size
    mean = np.asarray(info.mean, np.float32)[:, None, None] * 255
    scale = 1 / (np.asarray(info.std, np.float32)[:, None, None] * 255)
    rows = np.empty((len(images), 3, size, size), np.float32)
    for row, image in zip(rows, images):
        if image.shape[1:] == (size, size):
            np.multiply(image - mean, scale, out=row)
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8))[None]  # (1, 3, H, W)
            row[...] = eval_transform(pixels, size, info.mean, info.std)[0].numpy()
    return rows  # (B, 3, S, S) NCHW, as the OIP input declares


@register_runtime("torch", "PyTorch on the checkpoint's model")
class TorchRuntime:
    """The checkpoint's model in eval mode on ``device``, channels-last, bf16 autocast where it runs fast."""

    def __init__(self, model: torch.nn.Module, card: ModelCard, precision: str = "auto", device: str = "cpu"):
        from vipr.engine.device import resolve_precision

        self.device = resolve_device(device)
        self.model = model.eval().to(device=self.device, memory_format=torch.channels_last)
        self.precision = resolve_precision(precision, self.device)
        output_dim = card.num_classes or int(model.feature_dim)
        self.info = ModelInfo.from_card(card, output_dim, platform="pytorch_torchscript")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, precision: str = "auto", device: str = "cpu") -> TorchRuntime:
        from vipr.serve.export import load_for_export

        model, card = load_for_export(path)
        return cls(model, card, precision, device)

    @classmethod
    def open(cls, path: Path, *, cache_dir: str | os.PathLike | None = None, device: str = "cpu"):
        """The checkpoint's model; a detection or segmentation one (vipr.transfer) as a DenseTorchRuntime."""
        from vipr.engine.checkpoint import load_card
        from vipr.engine.card import DENSE_TASKS

        if load_card(path).task in DENSE_TASKS:
            from vipr.serve.dense_runtime import DenseTorchRuntime

            return DenseTorchRuntime.from_checkpoint(path, device=device)
        return cls.from_checkpoint(path, device=device)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        return preprocess(images, self.info)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)  # (B, 3, S, S)
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            return self.model(x).float().cpu().numpy()  # (B, C)


@register_runtime("onnx", "onnxruntime on an export cached per checkpoint (default)")
class OnnxRuntime:
    """An onnxruntime session on an exported file; a checkpoint is exported once into the cache."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 0, device: str = "cpu"):
        import onnxruntime

        from vipr.serve.export import INPUT_NAME, read_onnx_metadata

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=onnx_providers(device))
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"  # for messages
        self.path = Path(onnx_path)
        self.input_name = INPUT_NAME
        self.info = ModelInfo.from_export(read_onnx_metadata(onnx_path), platform="onnxruntime_onnx")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                        threads: int = 0, device: str = "cpu"):
        return open_onnx_file(cached_export(path, cache_dir), threads, device)

    @classmethod
    def open(cls, path: Path, *, cache_dir: str | os.PathLike | None = None, device: str = "cpu"):
        """An exported ``.onnx`` file as it is; a checkpoint through its cached export."""
        if path.suffix == ".onnx":
            return open_onnx_file(path, device=device)
        return cls.from_checkpoint(path, cache_dir, device=device)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        return preprocess(images, self.info)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)  # (B, 3, S, S)
        return self.session.run(None, {self.input_name: x})[0]  # (B, C)


def open_onnx_file(path: str | os.PathLike, threads: int = 0, device: str = "cpu"):
    """An OnnxRuntime, or a DenseOnnxRuntime for an exported detection or segmentation model."""
    from vipr.engine.card import DENSE_TASKS
    from vipr.serve.export import read_onnx_metadata

    if read_onnx_metadata(path).get("task") in DENSE_TASKS:
        from vipr.serve.dense_runtime import DenseOnnxRuntime

        return DenseOnnxRuntime(path, threads, device)
    return OnnxRuntime(path, threads, device)


def onnx_providers(device: str) -> list:
    """onnxruntime's execution providers for a ``--device``: CUDA where both torch and onnxruntime have it."""
    import onnxruntime

    resolved = resolve_device(device)  # a device this machine lacks is refused here, as everywhere
    if resolved.type == "cpu":
        return ["CPUExecutionProvider"]
    if resolved.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": resolved.index or 0}), "CPUExecutionProvider"]
    if device == "auto":  # a GPU, but an onnxruntime built without CUDA: the CPU, as before
        return ["CPUExecutionProvider"]
    raise ConfigError(f"--device {device}: this onnxruntime cannot run on {resolved.type} (providers: "
                      f"{', '.join(onnxruntime.get_available_providers())}); use --runtime torch, or --device cpu")


def cached_export(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The float ONNX export of checkpoint ``path`` in the cache (onnx_cache_path), made on first use."""
    from vipr.engine.checkpoint import resolve_path
    from vipr.serve.export import export_model

    path = resolve_path(path)
    out = onnx_cache_path(path, cache_dir)
    if not out.exists():  # concurrent servers never see a half-written file; the .json lands first
        with atomic_path(out) as tmp, atomic_path(f"{out}.json", tmp=f"{tmp}.json"):
            export_model(path, "onnx", tmp)
    return out


def onnx_cache_path(checkpoint_path: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Keyed by the checkpoint's bytes: a retrained file at the same path gets a fresh export."""
    digest = file_sha256(checkpoint_path)[:16]
    folder = Path(cache_dir) if cache_dir else cache_root() / "serve"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.onnx"


def create_runtime(kind: str, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                   device: str = "cpu"):
    """The registered runtime ``kind`` on ``device`` (vipr.engine.device) for a checkpoint file, or a file of its own
    format (onnx: an exported ``.onnx``)."""
    check_runtime(kind)
    path = Path(path)
    if path.suffix == ".onnx" and kind != "onnx":
        raise ExportError(f"{path} is an exported ONNX file; serve it with --runtime onnx, or pass the checkpoint")
    return _RUNTIMES[kind].open(path, cache_dir=cache_dir, device=device)


def load_runtime(path: str | os.PathLike, kind: str = "onnx", *, cache_dir: str | os.PathLike | None = None,
                 device: str = "cpu"):
    """``create_runtime(kind, path, ...)``, path first (the serving and benchmark call sites)."""
    return create_runtime(kind, path, cache_dir=cache_dir, device=device)
