"""``vipr serve NAME[@ALIAS|/VERSION]``: an online inference service for a registered model."""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from vipr.cli.choices import add_registry_flag, runtime_names, runtime_summary
from vipr.cli.options import ServeOptions
from vipr.cli.sections import add_config_flags, option_keys, read_sectioned, sectioned
from vipr.config import Choices
from vipr.errors import ViprError

HELP = """Serve a registered model (or a checkpoint / exported .onnx file) over HTTP until Ctrl-C.

  Open Inference Protocol v2 (KServe, Triton clients):
    GET  /v2/health/live  /v2/health/ready  /v2/models/NAME  /v2/models/NAME/ready
    POST /v2/models/NAME/infer          FP32 normalised or UINT8 raw NCHW tensors
  POST /v1/models/NAME/classify?k=5     image files (multipart field 'files') -> top-k labels
  POST /v1/models/NAME/detect           detect / instance models: boxes, labels, scores (and masks as
                                        COCO RLE) in each image's pixels; score_threshold=0.5,
                                        max_detections=100 (query or form fields)
  POST /v1/models/NAME/segment          segment models: each image's label map as a base64 PNG
                                        (format=png) or a COCO RLE per class (format=rle)
  GET  /metrics                         Prometheus

A detection or segmentation model (`vipr transfer`) takes [0, 1] or raw pixels at its S x S
canvas through infer; the image endpoints letterbox any image onto it. A detector's ONNX file
runs one image per call (the batch is looped); --runtime torch runs a batch in one call.

Requests are batched dynamically (--max-batch-size rows, waiting at most --max-delay-ms after
the first); a full queue answers 503 with Retry-After. With --token (or $VIPR_SERVE_TOKEN)
every endpoint but /v2/health/* needs 'Authorization: Bearer TOKEN'. Ctrl-C or SIGTERM stops
accepting connections and finishes the requests in flight.

--quantize int8 serves the model's INT8 ONNX file (vipr.serve.quantize: calibrated on the data it
was trained on, its accuracy against float checked), made on first use and cached by content.

  vipr serve linear-tiny@champion --port 8000
  vipr serve linear-tiny@champion --quantize int8
  curl -F files=@cat.png 'http://127.0.0.1:8000/v1/models/linear-tiny/classify?k=3'
  curl -F files=@street.jpg -F score_threshold=0.3 'http://127.0.0.1:8000/v1/models/scenes-frcnn/detect'"""


MODEL_FILES = (".pt", ".pth", ".onnx")  # a reference ending so means a file, not a registered name


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="online inference service (Open Inference Protocol v2)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]|CHECKPOINT")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help=f"port (default {ServeOptions.port})")
    add_registry_flag(p, "--runtime", runtime_names, summary=runtime_summary)
    p.add_argument("--quantize", choices=["none", "int8"],
                   help="int8: serve the model quantized by ONNX Runtime (onnx runtime only; default none)")
    o = ServeOptions
    p.add_argument("--max-batch-size", type=int, help=f"rows per model call (default {o.max_batch_size})")
    p.add_argument("--max-delay-ms", type=float,
                   help=f"how long the first request of a batch waits for others, in ms (default {o.max_delay_ms:g})")
    p.add_argument("--max-queue", type=int, help=f"requests waiting before 503 (default {o.max_queue})")
    p.add_argument("--max-pixels", type=int,
                   help=f"largest image accepted, in pixels; 413 over (default {o.max_pixels})")
    p.add_argument("--device", metavar="DEVICE",
                   help="auto | cpu | cuda | cuda:N | mps (default auto: a GPU when there is one and the runtime "
                        "can use it, else the CPU)")
    p.add_argument("--token", help="bearer token required by every endpoint but health (default $VIPR_SERVE_TOKEN; "
                                   "never part of the config)")
    add_config_flags(p)
    p.set_defaults(run=run)


@dataclass(frozen=True)
class ServeEndpoint:
    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 for every interface
    runtime: str = "onnx"  # a registered runtime (vipr.serve.runtime.list_runtimes)
    quantize: Annotated[str, Choices("none", "int8")] = "none"  # int8: the cached INT8 file (vipr.serve.quantize)


def serve_config_class() -> type:
    """``endpoint`` (host, runtime) and ``serve`` (port, batching, limits, device): ``--set serve.max_queue=512``."""
    return sectioned("ServeConfig", {"endpoint": ServeEndpoint, "serve": ServeOptions})


def read_config(args):
    keys = {"host": "endpoint.host", "runtime": "endpoint.runtime", "quantize": "endpoint.quantize",
            **option_keys("serve", ServeOptions)}
    return read_sectioned(serve_config_class(), args, keys)


def resolve(ref: str) -> tuple[Path, str, str | None]:
    """(checkpoint or .onnx file, served name, version) for a registry reference or a file path."""
    path = Path(ref)
    if path.exists():
        return path, path.stem, None
    if path.suffix in MODEL_FILES:
        raise ViprError(f"model file {ref} does not exist; pass an existing checkpoint or .onnx file, or a "
                        f"registered NAME[@ALIAS|/VERSION] (vipr model list)")
    from vipr.platform import registry

    found = registry.get_version(ref)
    return registry.resolve_model(f"{found.name}/{found.version}"), found.name, str(found.version)


def check_port_free(host: str, port: int) -> None:
    """Raise ViprError when ``host:port`` cannot be listened on (in use, or not an address of this machine).

    Bound the way uvicorn binds (SO_REUSEADDR), so a port a closed server left in TIME_WAIT counts as free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ViprError(f"--host {host}: not an address of this machine ({err.strerror}); "
                        f"use 127.0.0.1, 0.0.0.0 or a local interface's address") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise ViprError(f"cannot listen on {host}:{port} ({err.strerror}); stop the process using it "
                            f"or pick another --port") from None


def run(args) -> int:
    config = read_config(args)
    options, endpoint = config.serve, config.endpoint
    from vipr.engine.device import resolve_device
    from vipr.serve.runtime import check_runtime, load_runtime

    try:
        check_runtime(endpoint.runtime)
    except ViprError as err:
        raise ViprError(f"--runtime {endpoint.runtime}: {err}") from None
    if endpoint.quantize != "none" and endpoint.runtime != "onnx":
        raise ViprError(f"--quantize {endpoint.quantize} runs on --runtime onnx (ONNX Runtime's INT8 kernels), "
                        f"not {endpoint.runtime}; drop --runtime or --quantize")

    resolve_device(options.device)  # a device this machine lacks, before the port and the model
    check_port_free(endpoint.host, options.port)  # before loading the model, and before saying where it serves

    path, name, version = resolve(args.ref)
    if endpoint.quantize == "int8":
        from vipr.serve.quantize import cached_quantized

        path = cached_quantized(path)
    runtime = load_runtime(path, endpoint.runtime, device=options.device)
    import uvicorn

    from vipr.serve.app import create_app

    app = create_app(runtime, name, model_version=version, max_batch_size=options.max_batch_size,
                     max_delay_ms=options.max_delay_ms, max_queue=options.max_queue, token=args.token,
                     max_pixels=options.max_pixels)
    check_port_free(endpoint.host, options.port)  # loading took a while: still free?
    label = f"{name}/{version}" if version else name
    where = f"http://{endpoint.host}:{options.port}/v2/models/{name}"
    kind = f"{endpoint.runtime} {endpoint.quantize}" if endpoint.quantize != "none" else endpoint.runtime
    print(f"serving {label} ({kind} on {runtime.device}) on {where} "
          f"(Ctrl-C stops it)", file=sys.stderr, flush=True)
    from vipr.platform import deployments

    with deployments.serving(name, version, endpoint.host, options.port):  # a registered version: its row, until shutdown
        uvicorn.run(app, host=endpoint.host, port=options.port, log_level="info", timeout_graceful_shutdown=30)
    return 0
