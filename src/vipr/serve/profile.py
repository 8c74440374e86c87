"""``vipr model profile``: a model's size and speed under ONNX Runtime on the CPU.

Reported for a checkpoint (file or run folder) or an exported ``.onnx`` file (int8 included):

* ``params``: ``sum(p.numel())`` of the PyTorch model (for an ``.onnx`` file, of the float model
  its metadata describes: an int8 file holds the same weights in a quarter of the bytes);
* ``flops``: Conv2d + Linear multiply-adds of one image at the model's side (vipr.nas.flops, the
  NAS tables' convention), of the float model; a detector's counted on a blank image;
* ``file_bytes``: the ONNX file on disk; ``latency_ms``: median wall time of a batch-1 call;
  ``throughput``: images/s of batch-``batch`` calls (``batch`` / their median time), each after
  ``warmup`` untimed calls. A detector's file takes one image per call, so its batch is a loop of
  calls, as the server runs it;
* ``peak_memory_bytes``: the resident-memory high-water mark (``VmHWM`` of /proc/self/status) of a
  fresh process that loads the session and runs every timed call, minus its resident memory
  (``VmRSS``) just before the session was created: weights, ORT's arenas and the activations of
  the largest batch. (getrusage's ``ru_maxrss`` would not do: Linux carries it over from the
  parent through fork and exec, so a child of a large process reports the parent's peak.)

The timing runs in that fresh process (``python -m vipr.serve.profile``), so the caller's PyTorch
threads and memory take no part in it. A checkpoint is timed through the export ``vipr serve``
caches (vipr.serve.runtime.cached_export); ``image_size`` other than its own exports it at that
side into a temporary folder first.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vipr.errors import ExportError

BATCH = 16  # images per call of the throughput figure
RUNS = 20  # timed calls per batch size
WARMUP = 3  # untimed calls first: ORT allocates its arenas and picks kernels on the first ones
_DETECTORS = ("detect", "instance")


def profile(target: str | os.PathLike, *, image_size: int | None = None, batch: int = BATCH, runs: int = RUNS,
            warmup: int = WARMUP, threads: int = 0, cache_dir: str | os.PathLike | None = None) -> dict:
    """The size and speed report of ``target`` (module docstring); ``threads`` 0: ORT's default."""
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="vipr-profile-") as tmp:
        onnx_path, metadata, model = _prepare(target, image_size, Path(tmp), cache_dir)
        size = int(metadata["image_size"])
        single = metadata.get("task") in _DETECTORS
        timing = measure_in_child(onnx_path, size, batch=batch, runs=runs, warmup=warmup, threads=threads,
                                  single=single)
        file_bytes = onnx_path.stat().st_size
    quantization = metadata.get("quantization") or {}
    return {"model": str(target), "task": metadata.get("task") or _task(metadata), "image_size": size,
            "dtype": quantization.get("dtype", "float32"), "params": count_params(model),
            "flops": _flops(model, size), "file_bytes": file_bytes, **timing,
            "accuracy": quantization.get("accuracy"), "file": str(onnx_path) if target.suffix == ".onnx" else None}


def _prepare(target: Path, image_size: int | None, tmp: Path, cache_dir) -> tuple[Path, dict, object]:
    """(the ONNX file to time, its metadata, the float PyTorch model) for a checkpoint or an .onnx file."""
    from vipr.serve.export import read_onnx_metadata

    if target.suffix == ".onnx":
        try:
            metadata = read_onnx_metadata(target)
        except Exception as err:  # noqa: BLE001 - ORT's and json's errors alike mean "not a vipr export"
            raise ExportError(f"{target} is not an ONNX file exported by vipr ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); profile a checkpoint, a run folder "
                              "or a file from `vipr model export`") from None
        if image_size not in (None, int(metadata["image_size"])):
            raise ExportError(f"--image-size {image_size}: {target} takes {metadata['image_size']} px images only; "
                              "profile its checkpoint to export it at another side")
        return target, metadata, model_from_metadata(metadata)
    return _prepare_checkpoint(target, image_size, tmp, cache_dir)


def _prepare_checkpoint(path: Path, image_size: int | None, tmp: Path, cache_dir) -> tuple[Path, dict, object]:
    from vipr.engine.card import DENSE_TASKS
    from vipr.engine.checkpoint import load_card, resolve_path
    from vipr.serve.export import read_onnx_metadata
    from vipr.serve.runtime import cached_export

    path = resolve_path(path)
    card = load_card(path)
    if image_size in (None, card.image_size):
        onnx_path = cached_export(path, cache_dir)
        metadata = read_onnx_metadata(onnx_path)
        return onnx_path, metadata, model_from_metadata(metadata)
    if card.task in DENSE_TASKS:
        raise ExportError(f"--image-size {image_size}: a {card.task} model runs at its canvas of {card.image_size} "
                          "px only; drop --image-size")
    return _export_at(path, int(image_size), tmp)


def _export_at(path: Path, size: int, tmp: Path) -> tuple[Path, dict, object]:
    """A float ONNX export of the checkpoint at ``size`` px (its weights, another input side), unchecked."""
    from dataclasses import replace

    import torch

    from vipr.serve.export import (
        _export_onnx,
        _quiet_torchscript,
        export_metadata,
        load_for_export,
    )

    model, card = load_for_export(path)
    card = replace(card, image_size=size)
    metadata = export_metadata(card, model, "onnx", None, None)
    out = tmp / "model.onnx"
    with torch.no_grad(), _quiet_torchscript():
        _export_onnx(model, torch.zeros(2, 3, size, size), out, metadata)
    return out, metadata, model


def model_from_metadata(metadata: dict):
    """The float PyTorch module an export's metadata describes (random weights: only its shape is counted)."""
    from vipr.models import create_backbone

    if metadata.get("task") in ("detect", "instance", "segment"):
        from vipr.transfer.build import build_transfer_model

        spec = metadata["architecture_kwargs"]
        return build_transfer_model(spec, create_backbone(spec["backbone"], **spec["backbone_kwargs"])).eval()
    model = create_backbone(metadata["backbone"], **(metadata.get("backbone_kwargs") or {}))
    if metadata.get("num_classes"):
        model.reset_head(int(metadata["num_classes"]))
    return model.eval()


def count_params(model) -> int:
    """Every parameter of the module (frozen ones too: they are in the file)."""
    return sum(p.numel() for p in model.parameters())


def _flops(model, size: int) -> int | None:
    from vipr.nas.flops import count_flops

    return int(count_flops(model, size))


def _task(metadata: dict) -> str:
    return "classifier" if metadata.get("num_classes") else "backbone"


def measure_in_child(onnx_path: Path, size: int, **spec) -> dict:
    """``measure`` in a fresh Python process (module docstring): latency, throughput, peak memory."""
    request = json.dumps({"path": str(onnx_path), "size": size, **spec})
    done = subprocess.run([sys.executable, "-m", "vipr.serve.profile"], input=request, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ExportError(f"timing {onnx_path.name} under onnxruntime failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(path: str, size: int, *, batch: int = BATCH, runs: int = RUNS, warmup: int = WARMUP, threads: int = 0,
            single: bool = False) -> dict:
    """Latency (ms, batch 1), throughput (images/s, ``batch``) and peak memory of one ORT session in this process."""
    import onnxruntime

    before = memory_bytes("VmRSS")
    session = open_session(path, threads)
    rng = np.random.default_rng(0)
    one, many = (rng.standard_normal((n, 3, size, size)).astype(np.float32) for n in (1, batch))
    call = (lambda x: [session.run(None, {"input": image}) for image in x]) if single else \
        (lambda x: session.run(None, {"input": x}))
    latency = time_calls({"model": lambda: call(one)}, runs, warmup)["model"]
    rate = time_calls({"model": lambda: call(many)}, runs, warmup)["model"]
    peak = memory_bytes("VmHWM")
    return {"latency_ms": round(1000 * statistics.median(latency), 3),
            "throughput": round(batch / statistics.median(rate), 2), "batch": batch, "runs": runs, "warmup": warmup,
            "threads": threads, "peak_memory_bytes": max(0, peak - before), "onnxruntime": onnxruntime.__version__}


def open_session(path: str | os.PathLike, threads: int = 0):
    """A CPU session with ``threads`` intra-op threads (0: ORT's default, one per physical core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: a detector warns of every data-dependent output shape
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_calls(calls: dict, runs: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of ``runs`` calls of every function in ``calls``, interleaved (a load change on the
    machine hits each alike), after ``warmup`` untimed calls of each."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def memory_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, from /proc/self/status (Linux; kB
    there); 0 where it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(f"{field}:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


if __name__ == "__main__":  # the fresh process of measure_in_child: a JSON request on stdin, the result on stdout
    print(json.dumps(measure(**json.loads(sys.stdin.read()))))
