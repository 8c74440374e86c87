"""INT8 against float ONNX for a ResNet-18 classifier, in one run: top-1 on the test split, CPU throughput and latency.

The classifier is vipr's cheapest real one: `vipr eval linear --checkpoint random --backbone
resnet18 --image-size 32` on builtin:digits (a linear probe on the seeded random-init ResNet-18,
small stem; about a minute on 2 cores). ``--checkpoint FILE`` measures another (e.g. a
fine-tune). It is exported to ONNX (checked against PyTorch) and quantized by `vipr model export
--quantize int8`'s code (vipr.serve.quantize: calibrated on 256 train images, its formats tried
and chosen by their measured top-1); then, in this process, both ONNX files run with the same
thread count, interleaved call by call (a load change hits both alike): the median of ``--runs``
timed calls at batch 16 (throughput) and batch 1 (latency), after warm-up calls.

``--also-224``: the same comparison for a ResNet-18 with the ImageNet stem at 224 px (random
weights: speed does not depend on them; its "top-1" is agreement only), to tell a ratio bound
by per-call overhead at 32 px from the kernels' own. Targets: at most 1 point of top-1 lost, at
least 1.5x batch-16 throughput. Prints one JSON line and writes benchmarks/results/quantize.json.

    python benchmarks/quantize.py [--runs 20] [--threads 0] [--also-224] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks_common import machine_info

RESULTS = Path(__file__).parent / "results" / "quantize.json"
DATA = "builtin:digits"
MAX_DROP, MIN_SPEEDUP = 1.0, 1.5  # the targets: points of top-1, batch-16 throughput ratio


def linear_probe(folder: Path, backbone: str) -> Path:
    """`vipr eval linear --checkpoint random --backbone BACKBONE --image-size 32 --data builtin:digits`."""
    from vipr.eval.runner import run_eval

    run_eval("linear", checkpoint="random", backbone=backbone, image_size=32, data=DATA, out=folder / "linear",
             precision="fp32", progress=False, device="cpu")
    return folder / "linear" / "classifier.pt"


def imagenet_stem_checkpoint(folder: Path) -> Path:
    """A random ResNet-18 (ImageNet stem) classifier at 224 px whose card names builtin:digits as its data."""
    from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from vipr.data.sources import open_dataset
    from vipr.engine.card import make_card
    from vipr.engine.checkpoint import FORMAT, save_atomic
    from vipr.models import create_backbone

    dataset = open_dataset(DATA)
    torch.manual_seed(0)
    model = create_backbone("resnet18", small_stem=False, num_classes=10)
    card = make_card(architecture="resnet18", architecture_kwargs={"small_stem": False}, num_classes=10,
                     classes=dataset.classes, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     method="benchmark", dataset=DATA, dataset_digest=dataset.digest)
    path = folder / "resnet18-224.pt"
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": model.state_dict()}, path)
    return path


def compare(checkpoint: Path, folder: Path, *, runs: int, threads: int, images: dict) -> dict:
    """Export, quantize and time both files side by side (module docstring)."""
    from vipr.serve.export import export_model
    from vipr.serve.profile import open_session, time_calls
    from vipr.serve.quantize import quantize_file

    float_path, int8_path = folder / f"{checkpoint.stem}.onnx", folder / f"{checkpoint.stem}.int8.onnx"
    started = time.perf_counter()
    export_model(checkpoint, "onnx", float_path)
    exported = time.perf_counter()
    q = quantize_file(float_path, int8_path, **images)["quantization"]
    quantized = time.perf_counter()
    size = json.loads(Path(f"{float_path}.json").read_text())["image_size"]
    sessions = {"float": open_session(float_path, threads), "int8": open_session(int8_path, threads)}
    rng = np.random.default_rng(0)
    result = {"image_size": size, "accuracy": q["accuracy"], "weights": q["weights"], "tried": q["tried"],
              "float_nodes": q["float_nodes"], "export_s": round(exported - started, 1),
              "quantize_s": round(quantized - exported, 1),
              "file_bytes": {"float": float_path.stat().st_size, "int8": int8_path.stat().st_size}}
    for batch, key in ((16, "batch16"), (1, "batch1")):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        calls = {name: (lambda s=s, x=x: s.run(None, {"input": x})) for name, s in sessions.items()}
        median = {name: statistics.median(t) for name, t in time_calls(calls, runs, warmup=3).items()}
        result[key] = {"float_images_per_s": round(batch / median["float"], 2),
                       "int8_images_per_s": round(batch / median["int8"], 2),
                       "float_ms": round(1000 * median["float"], 3), "int8_ms": round(1000 * median["int8"], 3),
                       "speedup": round(median["float"] / median["int8"], 3)}
    result["targets_met"] = {"top1_drop": result["accuracy"]["delta"] >= -MAX_DROP,
                             "batch16_speedup": result["batch16"]["speedup"] >= MIN_SPEEDUP}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a classifier to measure (default: the linear probe)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model and batch size")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads, both models (0: ORT's default)")
    parser.add_argument("--also-224", action="store_true", help="also a ResNet-18 (ImageNet stem) at 224 px")
    parser.add_argument("--quick", action="store_true", help="the `tiny` backbone and 5 runs: checks the script")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    started = time.perf_counter()
    result = {"benchmark": "quantize", **machine_info(), "data": DATA, "threads": args.threads, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="vipr-bench-quantize-") as tmp:
        folder = Path(tmp)
        backbone = "tiny" if args.quick else "resnet18"
        checkpoint = args.checkpoint or linear_probe(folder, backbone)
        result["model"] = str(args.checkpoint) if args.checkpoint else \
            f"{backbone} (small stem) 32 px, linear probe on random-init features"
        result["probe_s"] = round(time.perf_counter() - started, 1)
        result["at_32px"] = compare(checkpoint, folder, runs=runs, threads=args.threads, images={})
        if args.also_224:  # 24 calibration and 64 held-out images: a 224 px ResNet-18 call costs 50x a 32 px one
            result["at_224px"] = compare(imagenet_stem_checkpoint(folder), folder, runs=min(runs, 5),
                                         threads=args.threads, images={"calibration_images": 24, "eval_images": 64})
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    result["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    print(line)
    if not args.quick:
        RESULTS.write_text(line + "\n")


if __name__ == "__main__":
    main()
