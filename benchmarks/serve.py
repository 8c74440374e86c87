"""Load test of `vipr serve`: a bounded closed-loop client on loopback, with and without dynamic batching.

A ResNet-18 classifier at 224 px (random weights: speed does not depend on them) is served by
the real app (FastAPI on uvicorn, in its own process). N concurrent clients each send
pre-encoded JPEG bytes to ``POST /v1/models/{name}/classify`` and wait for the answer before
sending the next, until a fixed number of requests is done. Reported: throughput, p50/p95/p99
latency, 5xx count and the server's batch-size histogram (from /metrics). In the same run the
model is called directly at batch sizes 1..32 and its best rate is the limit the service is
compared with. Prints one JSON line.

    python benchmarks/serve.py [--clients 32] [--requests 640] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks_common import machine_info

MODEL = "resnet18-224"


def make_checkpoint(folder: Path) -> Path:
    """A ResNet-18 (ImageNet stem) classifier checkpoint with 10 classes at 224 px."""
    from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from vipr.engine.card import make_card
    from vipr.engine.checkpoint import FORMAT, save_atomic
    from vipr.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone("resnet18", small_stem=False, num_classes=10)
    card = make_card(architecture="resnet18", architecture_kwargs={"small_stem": False}, num_classes=10,
                     classes=[f"class{i}" for i in range(10)], image_size=224, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, method="benchmark")
    path = folder / "classifier.pt"
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": model.state_dict()}, path)
    return path


def raw_throughput(runtime, sizes=(1, 4, 8, 16, 32), seconds: float = 3.0) -> dict[int, float]:
    """Images/s of ``runtime.predict`` called directly, per batch size (after one warm-up call)."""
    rates = {}
    for size in sizes:
        batch = np.random.default_rng(0).standard_normal((size, 3, 224, 224)).astype(np.float32)
        runtime.predict(batch)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runtime.predict(batch)
            calls += 1
        rates[size] = calls * size / (time.perf_counter() - start)
    return rates


def serve(path: str, port: int, max_batch_size: int, max_delay_ms: float, runtime_kind: str) -> None:
    import uvicorn

    from vipr.serve.app import create_app
    from vipr.serve.runtime import load_runtime

    app = create_app(load_runtime(path, runtime_kind), MODEL, max_batch_size=max_batch_size,
                     max_delay_ms=max_delay_ms, max_queue=1024)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_bytes(count: int = 8) -> list[bytes]:
    """A few 224x224 JPEGs of builtin:shapes images, encoded once so the client stays light."""
    from PIL import Image

    from vipr.data.sources import open_dataset

    images = open_dataset("builtin:shapes").test.images[:count]
    out = []
    for img in images:
        buffer = io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).resize((224, 224)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


async def wait_ready(client, base: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if (await client.get(f"{base}/v2/health/ready")).status_code == 200:
                return
        except Exception:  # noqa: BLE001 -- the server is still starting
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the server did not become ready")


async def closed_loop(base: str, clients: int, requests: int, payloads: list[bytes], endpoint: str = "classify",
                      on_answer=None, server_pid: int | None = None) -> dict:
    """``clients`` workers, each sending its next request to ``/v1/models/MODEL/{endpoint}`` when its last one is
    answered; ``on_answer(response)`` sees every 200; with ``server_pid``, the server's CPU time is measured too."""
    import httpx

    latencies, statuses, remaining = [], [], [requests]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await wait_ready(client, base)

        async def worker(i: int) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                files = {"files": ("image.jpg", payloads[(i + remaining[0]) % len(payloads)], "image/jpeg")}
                start = time.perf_counter()
                response = await client.post(f"{base}/v1/models/{MODEL}/{endpoint}", files=files)
                latencies.append(time.perf_counter() - start)
                statuses.append(response.status_code)
                if on_answer is not None and response.status_code == 200:
                    on_answer(response)

        server_start = process_cpu_s(server_pid) if server_pid else None
        start, cpu_start = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed, client_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        server_cpu = process_cpu_s(server_pid) - server_start if server_start is not None else None
        metrics = (await client.get(f"{base}/metrics")).text
    q = statistics.quantiles(latencies, n=100)
    cpu = {} if server_cpu is None else {"server_cpu_ms_per_request": 1000 * server_cpu / len(latencies),
                                         "server_cores": server_cpu / elapsed}
    return {"images_per_s": len(latencies) / elapsed, "p50_ms": 1000 * q[49], "p95_ms": 1000 * q[94],
            "p99_ms": 1000 * q[98], "requests": len(latencies),
            "errors_5xx": sum(s >= 500 for s in statuses),
            "client_cores_used": client_cpu / elapsed,  # the load generator's share of the 2 cores
            "errors_4xx": sum(400 <= s < 500 for s in statuses), **cpu, "batch_size_histogram": batch_histogram(metrics)}


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def batch_histogram(metrics_text: str) -> dict[str, int]:
    """Model calls per batch-size bucket, from the Prometheus histogram's cumulative buckets."""
    cumulative = {}
    for line in metrics_text.splitlines():
        if line.startswith("vipr_serve_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            cumulative[le] = float(line.rsplit(" ", 1)[1])
    out, previous = {}, 0.0
    for le, count in cumulative.items():
        if count - previous > 0:
            out[f"<={le}"] = int(count - previous)
        previous = count
    return out


def run_server_case(path: Path, args, max_batch_size: int) -> dict:
    port = free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=serve, args=(str(path), port, max_batch_size, args.max_delay_ms, args.runtime))
    server.start()
    try:
        payloads = jpeg_bytes()
        return asyncio.run(closed_loop(f"http://127.0.0.1:{port}", args.clients, args.requests, payloads))
    finally:
        server.terminate()
        server.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640, help="requests per case")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--quick", action="store_true", help="96 requests per case, 1 s per raw batch size")
    args = parser.parse_args()
    if args.quick:
        args.requests = 96
    from vipr.serve.runtime import load_runtime

    with tempfile.TemporaryDirectory() as tmp:
        path = make_checkpoint(Path(tmp))
        raw = raw_throughput(load_runtime(path, args.runtime), seconds=1.0 if args.quick else 3.0)
        result = {"benchmark": "serve", **machine_info(), "model": "resnet18 224 px, 10 classes",
                  "runtime": args.runtime, "clients": args.clients, "max_delay_ms": args.max_delay_ms,
                  "raw_images_per_s_by_batch": {str(k): v for k, v in raw.items()},
                  "raw_best_images_per_s": max(raw.values())}
        result["dynamic_batching"] = run_server_case(path, args, args.max_batch_size)
        result["dynamic_batching"]["max_batch_size"] = args.max_batch_size
        result["no_batching"] = run_server_case(path, args, 1)
    result["fraction_of_raw"] = result["dynamic_batching"]["images_per_s"] / result["raw_best_images_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
