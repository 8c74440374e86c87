"""Load test of `vipr serve` for a detection model: /detect under 16 closed-loop clients against the model alone.

A Faster R-CNN over the tiny backbone is fine-tuned briefly on builtin:scenes (64 px canvases;
speed depends on how many boxes survive, so not random weights) or taken from --checkpoint. The
real app (FastAPI on uvicorn, in its own process) serves it; N concurrent clients each send a
pre-encoded non-square JPEG (letterboxed by the server, answers mapped back to its pixels) to
``POST /v1/models/{name}/detect`` and wait for the answer before sending the next, until a fixed
number of requests is done. In the same run the runtime's ``predict`` is called directly on
batches of canvases (1..16), before the load and again after it at the best batch size; the mean
of the two best rates is the limit the service is compared with: ``fraction_of_direct`` (target
>= 0.7) with ``errors_5xx`` (target 0). Prints one JSON line.

On a machine whose cores other jobs use too, the share of a core each phase gets moves the wall
rates, so CPU time is measured as well (the server's process from /proc, the direct loop's and
the client's own): ``cpu_fraction_of_direct`` = direct CPU ms per image / server CPU ms per
request is the fraction a server with its cores to itself would reach, and ``*_cores`` say what
each phase got.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/serve_dense.py [--clients 16] [--requests 480] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchmarks_common import machine_info  # noqa: E402
from serve import closed_loop, free_port  # noqa: E402  (the classification benchmark)

MODEL = "scenes-frcnn"
DATA = "builtin:scenes?size=64&train=64&test=16&classes=3&objects=3"
SOURCE_SIZE = (96, 64)  # width, height px of the images sent: letterboxed to 64 x 43 on the canvas


def make_checkpoint(folder: Path, epochs: int) -> Path:
    """A briefly fine-tuned Faster R-CNN (tiny backbone, 64 px scenes) run folder; its output goes to stderr.

    10 epochs at lr 0.02 reach ~12% AP50 and ~1.5 boxes an image at score 0.5 (~40 s of one core); the
    defaults' 4 epochs leave none above 0.5, and the answers would hold no boxes to map back."""
    from vipr.cli.main import main

    out = folder / "detect"
    args = ["transfer", "detect", "--data", DATA, "--backbone", "tiny", "--epochs", str(epochs), "--out", str(out),
            "--no-track", "--no-progress", "--set", "train.num_threads=1", "optim.lr=0.02", "optim.warmup_iters=10"]
    with contextlib.redirect_stdout(sys.stderr):
        if main(args) != 0:
            raise SystemExit("training the benchmark model failed")
    return out


def payloads(count: int = 8) -> list[bytes]:
    """Scenes test images stretched to SOURCE_SIZE, as JPEG bytes encoded once (the client stays light)."""
    from PIL import Image

    from vipr.data.dense.sources import open_dense

    out = []
    for pixels in open_dense(DATA).test.images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(pixels.transpose(1, 2, 0)).resize(SOURCE_SIZE).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def direct_throughput(runtime, size: int, seconds: float) -> dict:
    """``runtime.predict`` on batches of ``size`` scenes canvases (after one warm-up call): images/s, CPU ms an
    image, and the cores the loop got (1.0: a core to itself)."""
    from vipr.data.dense.sources import open_dense

    canvases = open_dense(DATA).test.images  # (N, 3, 64, 64) uint8
    batch = runtime.preprocess([canvases[k % len(canvases)] for k in range(size)])  # (B, 3, S, S) in [0, 1]
    runtime.predict(batch)
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        runtime.predict(batch)
        calls += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images_per_s": calls * size / wall, "cpu_ms_per_image": 1000 * cpu / (calls * size), "cores": cpu / wall}


def serve(path: str, port: int, max_batch_size: int, max_delay_ms: float, runtime_kind: str) -> None:
    import uvicorn

    from vipr.serve.app import create_app
    from vipr.serve.runtime import load_runtime

    app = create_app(load_runtime(path, runtime_kind), MODEL, max_batch_size=max_batch_size,
                     max_delay_ms=max_delay_ms, max_queue=1024)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def detect_loop(base: str, clients: int, requests: int, images: list[bytes], server_pid: int) -> dict:
    """The classification benchmark's closed loop on ``/detect``, with the boxes each answer holds."""
    boxes = []
    result = await closed_loop(base, clients, requests, images, endpoint="detect", server_pid=server_pid,
                               on_answer=lambda r: boxes.append(len(r.json()["predictions"][0]["boxes"])))
    return {**result, "boxes_per_image": statistics.fmean(boxes or [0])}


def run_server_case(path: Path, args) -> dict:
    port = free_port()
    server = mp.get_context("spawn").Process(target=serve, args=(str(path), port, args.max_batch_size,
                                                                  args.max_delay_ms, args.runtime))
    server.start()
    try:
        return asyncio.run(detect_loop(f"http://127.0.0.1:{port}", args.clients, args.requests, payloads(),
                                       server.pid))
    finally:
        server.terminate()
        server.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=480)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of the benchmark model")
    parser.add_argument("--checkpoint", help="serve this detect / instance run folder or .pt instead of training one")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 160 requests, 1 s per direct batch size")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.epochs = 160, 1
    from vipr.serve.runtime import load_runtime

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.checkpoint) if args.checkpoint else make_checkpoint(Path(tmp), args.epochs)
        runtime = load_runtime(path, args.runtime, cache_dir=tmp)
        seconds = 1.0 if args.quick else 3.0
        before = {size: direct_throughput(runtime, size, seconds) for size in (1, 4, 8, 16)}
        best = max(before, key=lambda size: before[size]["images_per_s"])
        server = run_server_case(path, args)
        after = direct_throughput(runtime, best, seconds)
    print(json.dumps(summary(args, runtime, before, best, after, server)))


def summary(args, runtime, before: dict, best: int, after: dict, server: dict) -> dict:
    """The JSON line: the setting, the direct rates, the server's, and how they compare."""
    direct = (before[best]["images_per_s"] + after["images_per_s"]) / 2
    direct_cpu = (before[best]["cpu_ms_per_image"] + after["cpu_ms_per_image"]) / 2
    result = {"benchmark": "serve_dense", **machine_info(), "model": "faster_rcnn tiny 64 px scenes",
              "task": runtime.info.task, "runtime": args.runtime, "clients": args.clients,
              "max_batch_size": args.max_batch_size, "max_delay_ms": args.max_delay_ms,
              "source_size": list(SOURCE_SIZE),
              "direct_by_batch": {str(k): v for k, v in before.items()}, "direct_best_batch": best,
              "direct_after": after, "direct_images_per_s": direct, "direct_cpu_ms_per_image": direct_cpu,
              "server": server, "fraction_of_direct": server["images_per_s"] / direct,
              "errors_5xx": server["errors_5xx"]}
    if "server_cpu_ms_per_request" in server:
        result["cpu_fraction_of_direct"] = direct_cpu / server["server_cpu_ms_per_request"]
    result["meets_target"] = result["fraction_of_direct"] >= 0.7 and result["errors_5xx"] == 0
    return result

if __name__ == "__main__":
    main()
