"""INT8 quantization of an exported ONNX model with ONNX Runtime, checked against the float model.

``quantize_file(float.onnx, int8.onnx)`` runs ORT's recommended pre-processing
(``quant_pre_process``: symbolic shape inference and graph optimisation), then static
quantization (``quantize_static``) calibrated on train images prepared exactly as the server
prepares them (vipr.serve.quantize_data), then measures both models on held-out images
(vipr.serve.quantize_accuracy). The int8 file keeps the float file's metadata, plus
``quantization`` (settings, calibration, accuracy), inside and beside it (FILE.json), so it
serves, and ``vipr model profile`` reads it, like any export.

Settings (``static_settings``), chosen by measurement on this project's 2-core AMD EPYC (Zen 3,
AVX2 without VNNI; the machine was busy, so only ratios measured side by side in one run count):
ResNet-18 (small stem, 32 px) on builtin:digits, batch 16, one thread, 15 interleaved runs,
int8 / float ONNX throughput and top-1 on the 360 test images (float: a linear probe on random
features 96.94%, a 44-step fine-tune 86.67%):

    QDQ  U8S8  x2.22 / x2.10   91.94 (-5.0) / 88.89 (+2.2), agreeing with float on 91% / 93%
    QDQ  U8U8  x1.59 / x1.43   97.22 (+0.3) / 86.94 (+0.3), agreeing on 99%
    QDQ  S8S8  x1.22 / x1.19   96.94 ( 0.0) / 86.39 (-0.3)
    QOperator U8S8 and U8U8: as QDQ U8S8 (x2.2-2.5, same top-1)

(benchmarks/quantize.py at one thread, the probe: uint8 weights kept, +0.8 points, x1.48; a
random ResNet-18 with the ImageNet stem at 224 px: int8 weights kept, 0.0 points, x1.92.)

* QDQ format (ORT's recommendation; QOperator ran at the same speed);
* uint8 activations, weights per output channel (each filter its own scale), int8 weights first
  (U8S8: the fast kernel) and uint8 weights where int8's measure falls more than ``MAX_DROP``
  points below float. The U8S8 loss is not quantization's: the same file with ORT's graph
  optimisations off (QDQ simulated in float) scored 96.94; fused, AVX2's U8S8 kernel sums pairs
  of products in 16 bits and saturates (``vpmaddubsw``), ORT's documented issue on CPUs without
  VNNI, and U8U8, its documented remedy, did not lose (reduce_range, the other: 85.3). So the
  choice is measured per model at export: the faster format unless it costs over a point;
* the classifier's head (the graph's final Gemm) left in float: it folds the probe's feature
  standardisation (a wide range of weights within each row) and is under 0.01% of the MACs;
  quantizing it cost 2.8 points (simulated);
* MinMax calibration (on the U8S8 probe with its head quantized: MinMax 89.2, Entropy 89.2,
  Percentile 90.0, the last two several times slower to calibrate).

Static quantization is tried on every graph, a detector's too (torchvision's transform, NMS and
box decoding inside, one image per call: calibrated image by image; ORT's symbolic shape inference
fails on its data-dependent shapes, so its pre-processing runs without it). On ORT 1.32 it works
there (a tiny Faster R-CNN at 64 px: 1.35 vs 4.37 MiB, 41 vs 39 images/s: NMS and RoI ops, not
convolutions, bound it). Where static quantization fails on a detector's graph, dynamic
quantization (``quantize_dynamic``: int8 weights, activations quantized per call, no
calibration) is the fallback, its reason recorded in ``quantization.reason``; on any other graph
the failure is an ExportError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from vipr.errors import ExportError
from vipr.fsutil import atomic_write_text
from vipr.serve import quantize_accuracy as accuracy
from vipr.serve.export import INPUT_NAME, embed_metadata, read_onnx_metadata
from vipr.serve.quantize_data import (
    CALIBRATION_IMAGES,
    EVAL_IMAGES,
    QuantizationData,
    load_data,
)

QUANTIZE_CHOICES = ("int8",)
QUANTIZE_VERSION = 1  # part of the serving cache's key: bump when the settings or their choice change
DETECTORS = ("detect", "instance")  # one image per call: calibrated and compared image by image
CALIBRATION_BATCH = 32  # images per calibration call
EVAL_BATCH = 64  # images per comparison call
WEIGHT_TYPES = ("int8", "uint8")  # tried in this order (module docstring)
MAX_DROP = 1.0  # points of the task's measure a candidate may lose against float before the next is tried


def static_settings(weights: str = "int8") -> dict:
    """ORT's quantize_static arguments (module docstring) with int8 or uint8 ``weights``, as ORT's enums."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8 if weights == "int8" else QuantType.QUInt8, "per_channel": True,
            "calibrate_method": CalibrationMethod.MinMax,
            # ranges computed batch by batch and merged (min of mins, max of maxes: exact for MinMax), so ORT
            # never holds every activation of every calibration image (CalibMaxIntermediateOutputs would, and
            # drops the batches before its last group: ORT 1.32's calibrate.py clears them uncomputed)
            "extra_options": {"CalibStridedMinMax": 1}}


def quantize_file(float_path: str | os.PathLike, out: str | os.PathLike, *, calibration_data: str | None = None,
                  eval_data: str | None = None, calibration_images: int = CALIBRATION_IMAGES,
                  eval_images: int = EVAL_IMAGES, seed: int = 0) -> dict:
    """Quantize the exported float ONNX file to ``out`` (+ ``out``.json); its metadata with ``quantization``."""
    metadata = read_onnx_metadata(float_path)
    if metadata.get("quantization"):
        raise ExportError(f"{float_path} is already quantized ({metadata['quantization']['dtype']}); "
                          "quantize the float export")
    data = load_data(metadata, calibration_data, eval_data, calibration_images=calibration_images,
                     eval_images=eval_images, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    judge = Judge(Path(float_path), data, metadata)
    with tempfile.TemporaryDirectory(prefix="vipr-quantize-") as tmp, _quiet_ort():
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(Path(float_path), prepared)
        settings = _quantize(prepared, out, judge, seed)
    quantized = {**metadata, "quantization": settings}
    embed_metadata(out, quantized)
    atomic_write_text(f"{out}.json", json.dumps(quantized, indent=2))
    return {**quantized, "file": str(out)}


def cached_quantized(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                     calibration_data: str | None = None) -> Path:
    """The int8 file ``vipr serve --quantize int8`` runs for checkpoint or float ``.onnx`` ``path``: quantized on
    first use into the serving cache, keyed by the float export's bytes, the settings and the calibration source.
    An int8 ``.onnx`` is returned as it is."""
    from vipr.fsutil import atomic_path, cache_root, file_sha256
    from vipr.serve.runtime import cached_export

    path = Path(path)
    float_path = path if path.suffix == ".onnx" else cached_export(path, cache_dir)
    if read_onnx_metadata(float_path).get("quantization"):
        return float_path
    settings = {"version": QUANTIZE_VERSION, "weights": WEIGHT_TYPES, "max_drop": MAX_DROP,
                "calibration": calibration_data, "images": CALIBRATION_IMAGES, "eval_images": EVAL_IMAGES}
    key = hashlib.sha256(f"{file_sha256(float_path)} {json.dumps(settings)}".encode()).hexdigest()[:16]
    out = (Path(cache_dir) if cache_dir else cache_root() / "serve") / f"{key}.int8.onnx"
    if not out.exists():  # as the float export: a concurrent server never sees a half-written file
        with atomic_path(out) as tmp, atomic_path(f"{out}.json", tmp=f"{tmp}.json"):
            quantize_file(float_path, tmp, calibration_data=calibration_data)
    return out


def _pre_process(float_path: Path, prepared: Path) -> None:
    """ORT's quant_pre_process; without its symbolic shape inference where that fails (a detector's
    data-dependent shapes), and the graph as exported, with a warning, where even that fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    error = None
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=skip_symbolic)
            return
        except Exception as err:  # noqa: BLE001 - ORT raises many kinds
            error = err
    shutil.copyfile(float_path, prepared)
    import warnings

    warnings.warn(f"ORT's quantization pre-processing failed ({type(error).__name__}: {_first_line(error)}); "
                  "quantizing the graph as exported", stacklevel=3)


def _quantize(prepared: Path, out: Path, judge: Judge, seed: int) -> dict:
    """Static quantization, or dynamic where static fails on a detector's graph: the settings used."""
    try:
        return _static(prepared, out, judge, seed)
    except Exception as err:  # noqa: BLE001 - ORT's calibrator raises whatever the graph's ops raise
        if judge.task not in DETECTORS:
            raise ExportError(f"static INT8 quantization failed: {type(err).__name__}: {_first_line(err)}") from None
        reason = f"static quantization failed on the detector's graph ({type(err).__name__}: {_first_line(err)})"
        return _dynamic(prepared, out, judge, reason)


def _static(prepared: Path, out: Path, judge: Judge, seed: int) -> dict:
    """WEIGHT_TYPES in order, calibrated once: the first within MAX_DROP points of float, else the best tried."""
    from onnxruntime.quantization import quantize_static

    float_nodes = _head_nodes(prepared)
    ranges = prepared.with_name("ranges.json")  # ORT's calibration cache: the second candidate reuses the ranges
    batch = 1 if judge.task in DETECTORS else CALIBRATION_BATCH
    tried = []
    for weights in WEIGHT_TYPES:
        candidate = prepared.with_name(f"{weights}.onnx")
        quantize_static(str(prepared), str(candidate), ArrayReader(judge.data.calibration, batch, judge.single),
                        **static_settings(weights), nodes_to_exclude=float_nodes, calibration_cache_path=str(ranges))
        tried.append({"weights": weights, "file": candidate, "accuracy": judge.score(candidate)})
        if tried[-1]["accuracy"]["delta"] >= -MAX_DROP:
            break
    best = max(tried, key=lambda t: t["accuracy"]["delta"])  # the first of equals: the faster
    shutil.move(best["file"], out)  # from the temporary folder: maybe another file system
    calibration = {"data": judge.data.source, "images": len(judge.data.calibration), "method": "MinMax", "seed": seed}
    return {"dtype": "int8", "mode": "static", "format": "QDQ", "activations": "uint8", "weights": best["weights"],
            "per_channel": True, "calibration": calibration, "float_nodes": float_nodes, "reason": None,
            "accuracy": best["accuracy"], "tried": [{"weights": t["weights"], "delta": t["accuracy"]["delta"]}
                                                    for t in tried], "onnxruntime": _ort_version()}


def _dynamic(prepared: Path, out: Path, judge: Judge, reason: str) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True)
    return {"dtype": "int8", "mode": "dynamic", "format": "QOperator", "activations": "uint8 (per call)",
            "weights": "int8", "per_channel": True, "calibration": None, "float_nodes": [], "reason": reason,
            "accuracy": judge.score(out), "tried": [], "onnxruntime": _ort_version()}


def _head_nodes(path: Path) -> list[str]:
    """Names of the Gemm / MatMul nodes that write a graph output: a classifier's head, kept float."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and set(n.output) & outputs]


class ArrayReader(CalibrationDataReader):
    """ORT's CalibrationDataReader over prepared inputs: ``batch`` rows per call (``single``: one (3, S, S) image).

    ``len`` and ``set_range`` (in calls) serve ORT's strided calibration (``CalibStridedMinMax``)."""

    def __init__(self, inputs: np.ndarray, batch: int, single: bool = False):
        self.inputs, self.batch, self.single = inputs, batch, single
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return (len(self.inputs) + self.batch - 1) // self.batch

    def set_range(self, start_index: int, end_index: int) -> None:
        self.call, self.end = start_index, min(end_index, len(self))

    def get_next(self) -> dict | None:
        if self.call >= self.end:
            return None
        rows = self.inputs[self.call * self.batch:(self.call + 1) * self.batch]
        self.call += 1
        return {INPUT_NAME: np.ascontiguousarray(rows[0] if self.single else rows)}


class Judge:
    """The float model's outputs on the held-out (and, for a backbone, calibration) images, computed once;
    ``score(int8 file)``: the task's measure of vipr.serve.quantize_accuracy, with the data it used."""

    def __init__(self, float_path: Path, data: QuantizationData, metadata: dict):
        self.data, self.task = data, metadata.get("task") or ("classifier" if metadata.get("num_classes") else "backbone")
        self.single = self.task in DETECTORS
        self.reference = self._outputs(_session(float_path))

    def _outputs(self, session) -> tuple:
        if self.single:
            return (_detections(session, self.data.held_out),)
        if self.task == "backbone":  # the calibration images are the kNN bank
            return _run(session, self.data.held_out), _run(session, self.data.calibration)
        return (_run(session, self.data.held_out),)

    def score(self, int8_path: Path) -> dict:
        ours, data = self._outputs(_session(int8_path)), self.data
        if self.single:
            result = accuracy.detection_agreement(self.reference[0], ours[0])
        elif self.task == "segment":
            result = accuracy.segment_accuracy(self.reference[0], ours[0], data.held_out_maps)
        elif self.task == "backbone":
            result = accuracy.backbone_agreement((self.reference[1], ours[1]), data.calibration_labels,
                                                 (self.reference[0], ours[0]), data.held_out_labels)
        else:
            result = accuracy.classifier_accuracy(self.reference[0], ours[0], data.held_out_labels)
        return {**result, "data": data.eval_source}


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a detector warns of every data-dependent output shape
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs: np.ndarray) -> np.ndarray:
    """The first output for (N, 3, S, S) inputs, EVAL_BATCH rows per call."""
    parts = [session.run(None, {INPUT_NAME: inputs[i:i + EVAL_BATCH]})[0] for i in range(0, len(inputs), EVAL_BATCH)]
    return np.concatenate(parts)


def _detections(session, inputs: np.ndarray) -> list[dict]:
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, {INPUT_NAME: image}))) for image in inputs]


@contextlib.contextmanager
def _quiet_ort():
    """ORT's quantization tools log a warning, with the tensor's whole type, for each tensor they skip (a
    detector's hundreds of integer index tensors): the outcome is in the settings returned instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]
