"""The images INT8 quantization reads: a calibration sample and held-out images, prepared as serving prepares them.

Calibration fixes every activation's range, so its images must be the kind the served model will
see, prepared by the very code the server runs: a classifier's or backbone's images go through
vipr.serve.runtime.preprocess (resize when needed, (pixel - mean) / std), a dense model's
letterboxed canvases through vipr.serve.dense_runtime.to_unit (pixel / 255). The sample is drawn
from the train split with a fixed seed (folders are stored class by class: the first N images
would be one class); the held-out images are the test split of ``--eval-data`` (default: of the
calibration source), at most ``eval_images`` of them, drawn the same way.

The source defaults to the one the model was trained on (its metadata's ``dataset``). Images of
another side than the model's input are refused unless they are that training data (which the
model was trained on through the same resize): a 64 px source for a 32 px model is the sign of
the wrong data, and ranges set on resampled pixels would not be the served model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipr.errors import DataError

CALIBRATION_IMAGES = 256  # train images the calibrator runs; ORT's examples use a few hundred
EVAL_IMAGES = 1000  # held-out images compared, at most: 0.1-point resolution of a top-1


@dataclass(frozen=True)
class QuantizationData:
    """Model inputs, already prepared (float32), and their labels (-1 where unknown).

    ``calibration``: (N, 3, S, S) for a batched model; ``held_out``: the same for the comparison.
    A detector's rows are fed to it one image at a time.
    """

    source: str
    calibration: np.ndarray
    calibration_labels: np.ndarray
    eval_source: str
    held_out: np.ndarray
    held_out_labels: np.ndarray
    held_out_maps: np.ndarray | None = None  # a segmenter's (N, S, S) uint8 class per pixel, 255 ignore


def load_data(metadata: dict, calibration_data: str | None, eval_data: str | None, *,
              calibration_images: int = CALIBRATION_IMAGES, eval_images: int = EVAL_IMAGES,
              seed: int = 0) -> QuantizationData:
    """The calibration sample and held-out images for the exported model described by ``metadata``."""
    source = calibration_data or metadata.get("dataset")
    if not source:
        raise DataError("the model records no training data to calibrate on; pass --calibration-data SRC "
                        "(images like those it will serve, e.g. builtin:digits)")
    dense = metadata.get("task") in ("detect", "instance", "segment")
    train, _ = _splits(source, metadata, dense, "--calibration-data")
    held_src = eval_data or source
    _, test = _splits(held_src, metadata, dense, "--eval-data" if eval_data else "--calibration-data")
    if test is None or len(test) == 0:
        raise DataError(f"{held_src} has no test split to compare the float and int8 models on; pass "
                        f"--eval-data SRC with held-out images")
    cal_rows = _sample(len(train), calibration_images, seed)
    held_rows = _sample(len(test), eval_images, seed)
    prepare = _dense_inputs if dense else _classifier_inputs
    maps = getattr(test, "semantic_maps", None)
    return QuantizationData(source, prepare(train.images, cal_rows, metadata), _labels(train, cal_rows, dense),
                            held_src, prepare(test.images, held_rows, metadata), _labels(test, held_rows, dense),
                            None if maps is None else np.asarray(maps[held_rows]))


def _splits(src: str, metadata: dict, dense: bool, flag: str):
    """(train, test) of ``src``, opened as the model's kind of data and checked against its input."""
    if dense:
        from vipr.data.dense.sources import open_dense

        dataset = open_dense(src)
    else:
        from vipr.data.sources import open_dataset

        dataset = open_dataset(src, quiet=True, progress=False)
    same_data = not dense and _same_data(dataset, metadata)  # a dense model's canvas is never resized
    check_images(dataset.train.images.shape, metadata, src, flag, same_data=same_data)
    return dataset.train, dataset.test


def _same_data(dataset, metadata: dict) -> bool:
    digest = metadata.get("dataset_digest")
    return bool(digest) and getattr(dataset, "digest", None) == digest


def check_images(shape: tuple, metadata: dict, src: str, flag: str, *, same_data: bool = False) -> None:
    """DataError unless images of ``shape`` (N, C, H, W) suit the model: 3 channels, its side (module docstring)."""
    size = int(metadata["image_size"])
    _, channels, height, width = shape
    if channels != 3:
        raise DataError(f"{flag} {src}: its images have {channels} channels, the model takes 3 (RGB); "
                        f"pass RGB images like those it will serve")
    if (height, width) != (size, size) and not same_data:
        trained = f" or the data it was trained on ({metadata['dataset']})" if metadata.get("dataset") else ""
        raise DataError(f"{flag} {src}: its images are {height}x{width} px but the model takes {size}x{size}; "
                        f"pass images at the model's size{trained}")


def _sample(n: int, count: int, seed: int) -> np.ndarray:
    """``min(n, count)`` sorted rows of ``range(n)``, drawn without replacement with ``seed``."""
    if n == 0:
        return np.zeros(0, np.int64)
    rows = np.random.default_rng(seed).choice(n, size=min(n, count), replace=False)
    return np.sort(rows)


def _classifier_inputs(images: np.ndarray, rows: np.ndarray, metadata: dict) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (len(rows), 3, S, S): vipr.serve.runtime.preprocess, the server's code."""
    from vipr.serve.runtime import ModelInfo, preprocess

    info = ModelInfo.from_export(metadata, platform="onnxruntime_onnx")
    return preprocess(list(np.asarray(images[rows])), info)


def _dense_inputs(images: np.ndarray, rows: np.ndarray, metadata: dict) -> np.ndarray:
    """uint8 canvases (N, 3, S, S) -> float32 in [0, 1]: vipr.serve.dense_runtime.to_unit, the server's code."""
    from vipr.serve.dense_runtime import to_unit

    return to_unit(list(np.asarray(images[rows])), int(metadata["image_size"]))


def _labels(split, rows: np.ndarray, dense: bool) -> np.ndarray:
    if dense:  # the dense ground truth is read per image by the accuracy measure
        return np.full(len(rows), -1, np.int64)
    return np.asarray(split.labels[rows], np.int64)
