"""What every endpoint of one app shares: the served model, its batcher and limits, and the steps each request takes."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, UploadFile

from vipr.serve.batcher import DynamicBatcher
from vipr.serve.inputs import BadInput
from vipr.serve.metrics import ServeMetrics

# the image endpoint of each task, named in the refusal of another endpoint
TASK_ENDPOINTS = {"classifier": "classify", "detect": "detect", "instance": "detect", "segment": "segment"}


@dataclass
class ServeState:
    runtime: object
    model_name: str
    model_version: str | None
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    token: str | None
    max_pixels: int
    metrics: ServeMetrics | None = None
    batcher: DynamicBatcher | None = None
    ready: bool = False

    def queue_depth(self) -> int:
        return self.batcher.queue_depth() if self.batcher else 0


def served(request: Request, name: str) -> ServeState:
    """The app's state when ``name`` is its model; a 404 naming the served model otherwise."""
    state: ServeState = request.app.state.serve
    if name != state.model_name:
        raise BadInput(f"unknown model {name!r}; this server serves {state.model_name!r}", status=404)
    return state


def require_endpoint(state: ServeState, endpoint: str) -> None:
    """A 400 naming the endpoint of the model's task when ``endpoint`` (classify | detect | segment) is not it."""
    task, name = state.runtime.info.task, state.model_name
    if TASK_ENDPOINTS.get(task) == endpoint:
        return
    right = TASK_ENDPOINTS.get(task)
    where = f"use POST /v1/models/{name}/{right}" if right else f"use POST /v2/models/{name}/infer"
    article = "an" if task[:1] in "aeiou" else "a"
    raise BadInput(f"model {name!r} is {article} {task} model and /{endpoint} does not serve it; {where}")


async def predict(state: ServeState, batch):
    """The model's output for ``batch`` (B rows) through the batcher; 503 while loading or shutting down."""
    if not state.ready:
        raise BadInput("the model is not ready yet (loading or shutting down); retry shortly", status=503)
    return await state.batcher.submit(batch)


async def read_files(files: list[UploadFile], state: ServeState) -> list[tuple[bytes, str]]:
    """(bytes, file name) of each uploaded file; 400 over ``max_batch_size`` files."""
    if len(files) > state.max_batch_size:
        raise BadInput(f"{len(files)} files in one request; send at most {state.max_batch_size}")
    return [(await file.read(), file.filename or f"file {i}") for i, file in enumerate(files)]
