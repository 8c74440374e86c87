"""``vipr model export --quantize int8`` and ``vipr model profile``: the INT8 export and the size/speed report.

The parser pieces and runners that vipr.cli.model_cmd calls; the work is in vipr.serve.quantize
and vipr.serve.profile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from vipr.errors import ExportError

PROFILE_HELP = """Size and speed of a model under ONNX Runtime on this machine's CPU.

  params   sum of the PyTorch model's parameter sizes (an .onnx file: of the float model it was
           exported from)
  flops    Conv2d + Linear multiply-adds of one image at the model's side (vipr.nas.flops)
  latency  median ms of a batch-1 call; throughput: images/s of batch --batch calls (median);
           both after warm-up calls, in a fresh process
  memory   peak resident memory of that process minus its memory before the session was made
  size     bytes of the ONNX file (a checkpoint: its cached float export)

  vipr model profile shapes-linear@prod
  vipr model profile model.int8.onnx --json"""


def add_quantize_flags(export: argparse.ArgumentParser) -> None:
    """``--quantize``, ``--calibration-data`` and ``--eval-data`` of ``vipr model export``."""
    from vipr.serve.quantize_data import CALIBRATION_IMAGES, EVAL_IMAGES

    export.add_argument("--quantize", choices=["int8"],
                        help="ONNX only: INT8 by ONNX Runtime's static quantization, calibrated on train images "
                             "(dynamic where static fails: detectors), with the accuracy against the float model "
                             "reported and stored in FILE.json")
    export.add_argument("--calibration-data", metavar="SRC",
                        help=f"images to calibrate on: {CALIBRATION_IMAGES} of its train split, prepared as `vipr "
                             "serve` prepares them (default: the data the model was trained on)")
    export.add_argument("--eval-data", metavar="SRC",
                        help=f"held-out images for the float-vs-int8 comparison: up to {EVAL_IMAGES} of its test "
                             "split (default: the calibration data's test split)")


def check_quantize_flags(args) -> None:
    """One-line errors for flags that cannot go together, before any export."""
    if args.quantize and args.fmt != "onnx":
        raise ExportError(f"--quantize {args.quantize} needs --format onnx (ONNX Runtime quantizes ONNX graphs); "
                          f"drop --quantize for {args.fmt}")
    if not args.quantize and (args.calibration_data or args.eval_data):
        flag = "--calibration-data" if args.calibration_data else "--eval-data"
        raise ExportError(f"{flag} is read by --quantize int8 only; add --quantize int8 or drop {flag}")


def export_quantized(path: Path, out: str, *, name: str | None = None, version=None,
                     calibration_data: str | None = None, eval_data: str | None = None) -> dict:
    """The float export (checked against PyTorch) into a temporary folder, then its INT8 file at ``out``."""
    from vipr.serve.export import export_model
    from vipr.serve.quantize import quantize_file

    with tempfile.TemporaryDirectory(prefix="vipr-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        float_result = export_model(path, "onnx", float_path, name=name, version=version)
        result = quantize_file(float_path, out, calibration_data=calibration_data, eval_data=eval_data)
    return {**result, "max_abs_diff": float_result["max_abs_diff"], "tolerance": float_result["tolerance"]}


def run_quantized_export(args, path: Path, name: str | None, version) -> dict:
    """``vipr model export ... --quantize int8``: writes ``args.out`` (+ .json) and prints the comparison."""
    result = export_quantized(path, args.out, name=name, version=version, calibration_data=args.calibration_data,
                              eval_data=args.eval_data)
    q, acc = result["quantization"], result["quantization"]["accuracy"]
    label = f"{name}/{version}" if name else str(path)
    how = (f"static, {q['format']}, uint8 activations, {q['weights']} weights per channel, calibrated on "
           f"{q['calibration']['images']} images of {q['calibration']['data']}") if q["mode"] == "static" else \
        f"dynamic ({q['reason']})"
    print(f"exported {label} to {args.out} (onnx int8: {how})")
    print(f"{acc['metric']} on {acc['images']} held-out images of {acc['data']}: float {acc['float']:.2f}, int8 "
          f"{acc['int8']:.2f} ({acc['delta']:+.2f} points); stored in {args.out}.json")
    return result


def add_profile_parser(actions) -> argparse.ArgumentParser:
    from vipr.serve.profile import BATCH, RUNS

    p = actions.add_parser("profile", help="parameters, FLOPs, ONNX Runtime CPU latency, throughput, memory",
                           description=PROFILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]|CHECKPOINT|RUN_DIR|FILE.onnx")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="input side for a classifier or backbone checkpoint (default: the model's)")
    p.add_argument("--batch", type=int, default=BATCH, help=f"images per throughput call (default {BATCH})")
    p.add_argument("--runs", type=int, default=RUNS, help=f"timed calls per batch size; the median is reported "
                                                          f"(default {RUNS})")
    p.add_argument("--threads", type=int, default=0,
                   help="ONNX Runtime intra-op threads (default 0: one per physical core)")
    return p


def run_profile(args) -> int:
    from vipr.serve.profile import profile

    # before the model is read; the ceilings keep one call within memory (batch x side^2) and time (runs)
    for flag, value, low, high in (("--batch", args.batch, 1, 4096), ("--runs", args.runs, 1, 10**6),
                                   ("--threads", args.threads, 0, 4096), ("--image-size", 8 if args.image_size is None else args.image_size, 8, 4096)):
        if not low <= value <= high:
            raise ExportError(f"{flag} must be an integer in {low}..{high}, got {value}")
    report = profile(resolve_target(args.ref), image_size=args.image_size, batch=args.batch, runs=args.runs,
                     threads=args.threads)
    print_profile(args.ref, report)
    if args.json:
        print(json.dumps(report))
    return 0


def resolve_target(ref: str) -> Path:
    """A file or folder as given; a registered NAME[@ALIAS|/VERSION] as its checkpoint; else one line (a name
    the workspace cannot hold fails at once: vipr.platform.registry.resolve_source)."""
    path = Path(ref)
    if path.suffix == ".onnx" and not path.exists():
        raise ExportError(f"{ref} not found; pass an existing .onnx file, checkpoint or run folder, or a registered "
                          "NAME[@ALIAS|/VERSION] (vipr model list)")
    from vipr.platform import registry

    return registry.resolve_source(ref, "vipr model profile")


def print_profile(ref: str, r: dict) -> None:
    acc = r.get("accuracy")
    rows = {"task": r["task"], "dtype": r["dtype"], "image size": f"{r['image_size']} px",
            "parameters": f"{r['params']:,}", "FLOPs": f"{r['flops'] / 1e6:,.1f} M multiply-adds per image",
            "file": f"{r['file_bytes'] / 2**20:.2f} MiB",
            "latency": f"{r['latency_ms']:.2f} ms (batch 1, median of {r['runs']})",
            "throughput": f"{r['throughput']:.1f} images/s (batch {r['batch']})",
            "peak memory": f"{r['peak_memory_bytes'] / 2**20:.1f} MiB (RSS above the process before the session)"}
    if acc:
        rows["int8 accuracy"] = f"{acc['metric']} {acc['int8']:.2f} vs float {acc['float']:.2f} ({acc['delta']:+.2f})"
    threads = r["threads"] or "ORT default"
    print(f"{ref} under onnxruntime {r['onnxruntime']} on the CPU ({threads} threads)")
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"  {key.ljust(width)}  {value}")
