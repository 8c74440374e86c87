"""The inference service: Open Inference Protocol v2 (KServe, Triton clients), image classification, metrics.

Endpoints (``{name}`` is the served model's name):

  GET  /v2/health/live, /v2/health/ready      open even when a token is set
  GET  /v2, /v2/models/{name}, /v2/models/{name}/ready
  POST /v2/models/{name}/infer                FP32 normalised or UINT8 raw NCHW at the model's size
  POST /v1/models/{name}/classify?k=5         image files (multipart field ``files``) -> top-k labels
  POST /v1/models/{name}/detect               image files -> boxes, labels, scores (masks) in their pixels
  POST /v1/models/{name}/segment              image files -> label maps in their pixels (vipr.serve.dense)
  GET  /metrics                               Prometheus text

Each image endpoint serves the models of its task (classifier; detect and instance; segment) and
refuses the others with a 400 naming theirs. For a detection or segmentation model ``infer``
takes [0, 1] (FP32) or raw (UINT8) pixels at the S x S canvas and returns its raw outputs.

Every request goes through one :class:`~vipr.serve.batcher.DynamicBatcher`; a client error is
a 4xx JSON ``{"error": "..."}`` and the server goes on serving.

Examples:
    >>> app = create_app(TorchRuntime.from_checkpoint("classifier.pt"), "linear-tiny")
    >>> uvicorn.run(app, port=8000)
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

import vipr
from vipr.engine.card import DENSE_TASKS
from vipr.serve import dense
from vipr.serve.batcher import DynamicBatcher, Overloaded
from vipr.serve.inputs import BadInput, decode_image, parse_infer_request
from vipr.serve.metrics import ServeMetrics
from vipr.serve.state import ServeState, predict, read_files, require_endpoint, served

OPEN_PREFIX = "/v2/health/"  # liveness/readiness probes need no token
RETRY_AFTER_S = 1


def create_app(runtime, model_name: str, *, model_version: str | int | None = None, max_batch_size: int = 16,
               max_delay_ms: float = 5.0, max_queue: int = 256, token: str | None = None,
               max_pixels: int = 4096 * 4096) -> FastAPI:
    """A FastAPI app serving ``runtime`` as ``model_name``; ``token`` defaults to $VIPR_SERVE_TOKEN."""
    token = token if token is not None else os.environ.get("VIPR_SERVE_TOKEN") or None
    state = ServeState(runtime, model_name, None if model_version is None else str(model_version), max_batch_size,
                       max_delay_ms, max_queue, token, max_pixels)
    state.metrics = ServeMetrics(state.queue_depth)
    app = FastAPI(title=f"vipr serve {model_name}", version=vipr.__version__, lifespan=_lifespan)
    app.state.serve = state
    for path, endpoint, methods in ROUTES:
        app.add_api_route(path, endpoint, methods=methods)
    app.add_middleware(AuthAndMetrics)
    app.add_exception_handler(BadInput, lambda _, err: _error(str(err), err.status))
    app.add_exception_handler(Overloaded, lambda _, err: _error(f"{err}; retry in {RETRY_AFTER_S} s", 503,
                                                                {"Retry-After": str(RETRY_AFTER_S)}))
    app.add_exception_handler(RequestValidationError, lambda _, err: _error(_validation_message(err), 400))
    app.add_exception_handler(HTTPException, lambda _, err: _error(str(err.detail), err.status_code, err.headers))
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    """Start the batcher, warm the model up with one batch, serve; on shutdown finish the queue."""
    state: ServeState = app.state.serve
    state.batcher = DynamicBatcher(state.runtime.predict, max_batch_size=state.max_batch_size,
                                   max_delay_ms=state.max_delay_ms, max_queue=state.max_queue,
                                   on_batch=state.metrics.batch_size.observe).start()
    size = state.runtime.info.image_size
    await state.batcher.submit(np.zeros((1, 3, size, size), np.float32))
    state.ready = True
    try:
        yield
    finally:
        state.ready = False
        await run_in_threadpool(state.batcher.drain)


def _error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors()]
    return "invalid request: " + "; ".join(parts)


class AuthAndMetrics:
    """Pure ASGI middleware: the bearer token check and the request metrics.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware wraps
    every response body in an extra stream and task, a cost paid on each of hundreds of
    requests per second.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state: ServeState = scope["app"].state.serve
        start, status = time.perf_counter(), [500]

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        request = Request(scope)
        if state.token and not scope["path"].startswith(OPEN_PREFIX) and not _authorised(request, state.token):
            await _error("missing or wrong token: send the header 'Authorization: Bearer <token>'", 401,
                         {"WWW-Authenticate": "Bearer"})(scope, receive, send_and_record)
        else:
            await self.app(scope, receive, send_and_record)
        state.metrics.observe_request(_endpoint(request), status[0], time.perf_counter() - start)


def _authorised(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _endpoint(request: Request) -> str:
    """The route template (``/v2/models/{name}/infer``), not the raw path: bounded label values."""
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] == Match.FULL:
            return route.path
    return "unmatched"


async def live():
    return {"live": True}


async def ready(request: Request):
    state: ServeState = request.app.state.serve
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


async def server_metadata():
    return {"name": "vipr", "version": vipr.__version__, "extensions": []}


async def model_metadata(name: str, request: Request):
    state = served(request, name)
    info = state.runtime.info
    size = info.image_size
    shape = [-1, 3, size, size]
    inputs = [{"name": "input", "datatype": "FP32", "shape": shape},
              {"name": "input_uint8", "datatype": "UINT8", "shape": shape}]
    outputs = [{"name": info.output, "datatype": "FP32", "shape": [-1, info.output_dim]}]
    if info.task in DENSE_TASKS:  # FP32 input in [0, 1]: the model normalises inside
        inputs, outputs = dense.metadata_tensors(info.task, size, info.output_dim)
    return {"name": state.model_name, "versions": [state.model_version] if state.model_version else [],
            "platform": info.platform, "inputs": inputs, "outputs": outputs,
            "parameters": {"task": info.task, "classes": list(info.classes), "image_size": size,
                           "mean": list(info.mean), "std": list(info.std), "max_batch_size": state.max_batch_size}}


async def model_ready(name: str, request: Request):
    state = served(request, name)
    return JSONResponse({"name": name, "ready": state.ready}, status_code=200 if state.ready else 503)


async def infer(name: str, request: Request):
    state = served(request, name)
    body = await request.body()
    runtime = state.runtime
    datatype, batch, request_id = await run_in_threadpool(parse_infer_request, body, runtime.info.image_size,
                                              state.max_batch_size)
    if datatype == "UINT8":
        batch = await run_in_threadpool(runtime.preprocess, list(batch))
    outputs = await predict(state, batch)  # (B, C); dense models: vipr.serve.dense_runtime's
    if runtime.info.task in DENSE_TASKS:
        tensors = dense.infer_outputs(outputs, runtime.info.task)
    else:
        tensors = [{"name": runtime.info.output, "shape": list(outputs.shape), "datatype": "FP32",
                    "data": outputs.reshape(-1).tolist()}]
    response = {"model_name": state.model_name,
                **({"id": request_id} if request_id is not None else {}),  # OIP v2: the response echoes the id
                "outputs": tensors}
    if state.model_version:
        response["model_version"] = state.model_version
    return response


async def classify(name: str, request: Request, files: list[UploadFile] = File(...),
                   k: int = Query(5, ge=1, description="how many labels per image")):
    state = served(request, name)
    info = state.runtime.info
    require_endpoint(state, "classify")
    contents = await read_files(files, state)
    batch = await run_in_threadpool(_decode_all, contents, state)
    probabilities = softmax(await predict(state, batch))  # (B, C)
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return {"model_name": state.model_name, "predictions": [
        {"file": filename, "top": [{"label": _label(info.classes, int(i)), "index": int(i),
                                    "score": float(row[i])} for i in order]}
        for (_, filename), row, order in zip(contents, probabilities, top)]}


def _decode_all(contents: list[tuple[bytes, str]], state: ServeState) -> np.ndarray:
    images = [decode_image(content, filename, state.max_pixels) for content, filename in contents]
    return state.runtime.preprocess(images)  # (B, 3, S, S)


def _label(classes: tuple[str, ...], index: int) -> str:
    return str(classes[index]) if index < len(classes) else str(index)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # (B, C), no overflow
    return shifted / shifted.sum(axis=1, keepdims=True)


async def metrics(request: Request):
    state: ServeState = request.app.state.serve
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


ROUTES = (("/v2/health/live", live, ["GET"]), ("/v2/health/ready", ready, ["GET"]), ("/v2", server_metadata, ["GET"]),
          ("/v2/models/{name}", model_metadata, ["GET"]), ("/v2/models/{name}/ready", model_ready, ["GET"]),
          ("/v2/models/{name}/infer", infer, ["POST"]), ("/v1/models/{name}/classify", classify, ["POST"]),
          ("/v1/models/{name}/detect", dense.detect, ["POST"]), ("/v1/models/{name}/segment", dense.segment, ["POST"]),
          ("/metrics", metrics, ["GET"]))
