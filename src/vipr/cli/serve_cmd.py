"""``vipr serve NAME[@ALIAS|/VERSION]``: an online inference service for a registered model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = """Serve a registered model (or a checkpoint / exported .onnx file) over HTTP until Ctrl-C.

  Open Inference Protocol v2 (KServe, Triton clients):
    GET  /v2/health/live  /v2/health/ready  /v2/models/NAME  /v2/models/NAME/ready
    POST /v2/models/NAME/infer          FP32 normalised or UINT8 raw NCHW tensors
  POST /v1/models/NAME/classify?k=5     image files (multipart field 'files') -> top-k labels
  GET  /metrics                         Prometheus

Requests are batched dynamically (--max-batch-size rows, waiting at most --max-delay-ms after
the first); a full queue answers 503 with Retry-After. With --token (or $VIPR_SERVE_TOKEN)
every endpoint but /v2/health/* needs 'Authorization: Bearer TOKEN'. Ctrl-C or SIGTERM stops
accepting connections and finishes the requests in flight.

  vipr serve linear-tiny@champion --port 8000
  curl -F files=@cat.png 'http://127.0.0.1:8000/v1/models/linear-tiny/classify?k=3'"""


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="online inference service (Open Inference Protocol v2)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]|CHECKPOINT")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx",
                   help="onnx: onnxruntime on an export cached per checkpoint (default); torch: PyTorch")
    p.add_argument("--max-batch-size", type=int, default=16, help="rows per model call (default 16)")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="how long the first request of a batch waits for others, in ms (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting before 503 (default 256)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest image accepted, in pixels (413 over)")
    p.add_argument("--token", help="bearer token required by every endpoint but health (default $VIPR_SERVE_TOKEN)")
    p.set_defaults(run=run)


def resolve(ref: str) -> tuple[Path, str, str | None]:
    """(checkpoint or .onnx file, served name, version) for a registry reference or a file path."""
    path = Path(ref)
    if path.exists():
        return path, path.stem, None
    from vipr.platform import registry

    found = registry.get_version(ref)
    return registry.resolve_model(f"{found.name}/{found.version}"), found.name, str(found.version)


def run(args) -> int:
    import uvicorn

    from vipr.serve.app import create_app
    from vipr.serve.runtime import load_runtime

    path, name, version = resolve(args.ref)
    runtime = load_runtime(path, args.runtime)
    app = create_app(runtime, name, model_version=version, max_batch_size=args.max_batch_size,
                     max_delay_ms=args.max_delay_ms, max_queue=args.max_queue, token=args.token,
                     max_pixels=args.max_pixels)
    label = f"{name}/{version}" if version else name
    print(f"serving {label} ({args.runtime}) on http://{args.host}:{args.port}/v2/models/{name} "
          f"(Ctrl-C stops it)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    return 0
