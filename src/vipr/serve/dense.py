"""The image endpoints of detection and segmentation models, and their OIP v2 tensors.

  POST /v1/models/{name}/detect?score_threshold=0.5&max_detections=100   detect and instance models
  POST /v1/models/{name}/segment?format=png                              segment models

Both take the multipart field ``files`` as /classify does; parameters come from the query or
from form fields. Each image is letterboxed onto the model's S x S canvas (as in training and
``vipr transfer predict``), a batch of canvases goes through the batcher, and every answer is in
the image's own pixels (vipr.transfer.predict's mapping). Per image:

  detect:  {"file", "width", "height", "boxes": [[x0, y0, x1, y1], ...], "labels": [name, ...],
            "label_ids": [int, ...], "scores": [float, ...]} and, for instance models,
            "masks": [{"size": [height, width], "counts": str}, ...] (COCO compressed RLE)
  segment: {"file", "width", "height", "label_map": base64 PNG of class ids (8-bit; 16-bit over
            256 classes)} or with format=rle "masks": [{"label_id", "label", "pixels", "size",
            "counts"}, ...] for each class present
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from fastapi import File, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from vipr.data.dense import rle
from vipr.serve.inputs import BadInput, Canvas, decode_canvas_image
from vipr.serve.state import ServeState, predict, read_files, require_endpoint, served
from vipr.transfer.predict import MASK_THRESHOLD, to_source, to_source_detections

SEGMENT_FORMATS = ("png", "rle")
MAX_DETECTIONS = 10_000  # per image: the most a model may be configured to keep (vipr.transfer.config)


async def detect(name: str, request: Request, files: list[UploadFile] = File(...)):
    state = served(request, name)
    require_endpoint(state, "detect")
    threshold = _number(await _param(request, "score_threshold"), "score_threshold", 0.5, float, 0.0, 1.0)
    limit = _number(await _param(request, "max_detections"), "max_detections", 100, int, 1, MAX_DETECTIONS)
    canvases, outputs = await _run(state, await read_files(files, state))
    info = state.runtime.info

    def answer_all() -> list[dict]:
        return [detections_answer(out, canvas, info.classes, threshold, limit)
                for out, canvas in zip(outputs, canvases)]

    # boxes alone cost O(boxes), ~0.1 ms an image: on the loop, saving a thread hop (~0.6 ms of one core a
    # request, benchmarks/serve_dense.py); masks cost O(boxes x pixels): in a worker thread
    answers = await run_in_threadpool(answer_all) if info.task == "instance" else answer_all()
    return {"model_name": state.model_name, "task": info.task, "score_threshold": threshold,
            "max_detections": limit, "predictions": _named(answers, files)}


async def segment(name: str, request: Request, files: list[UploadFile] = File(...)):
    state = served(request, name)
    require_endpoint(state, "segment")
    fmt = (await _param(request, "format")) or "png"
    if fmt not in SEGMENT_FORMATS:
        raise BadInput(f"format {fmt!r} is not served; use format=png (a label map) or format=rle (a mask per class)")
    canvases, logits = await _run(state, await read_files(files, state))  # logits (B, K, S, S)
    classes = state.runtime.info.classes
    answers = await run_in_threadpool(lambda: [segmentation_answer(row, canvas, classes, fmt)
                                               for row, canvas in zip(logits, canvases)])
    return {"model_name": state.model_name, "task": "segment", "format": fmt, "classes": list(classes),
            "predictions": _named(answers, files)}


async def _run(state: ServeState, contents: list[tuple[bytes, str]]):
    """(the canvases, the model's output for them) of the uploaded files."""
    size = state.runtime.info.image_size
    canvases = await run_in_threadpool(
        lambda: [decode_canvas_image(content, filename, state.max_pixels, size) for content, filename in contents])
    batch = state.runtime.preprocess([canvas.pixels for canvas in canvases])  # (B, 3, S, S) in [0, 1]
    return canvases, await predict(state, batch)


def _named(answers: list[dict], files: list[UploadFile]) -> list[dict]:
    return [{"file": file.filename or f"file {i}", **answer} for i, (file, answer) in enumerate(zip(files, answers))]


async def _param(request: Request, key: str) -> str | None:
    """A parameter from the query string, else from the multipart form (parsed once, by FastAPI)."""
    value = request.query_params.get(key)
    if value is None:
        value = (await request.form()).get(key)
    return value if value is None or isinstance(value, str) else None


def _number(text: str | None, key: str, default, kind: type, low, high):
    """``text`` as ``kind`` in [low, high] (``default`` when absent); a 400 naming ``key`` and the range otherwise."""
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadInput(f"{key}={text!r} is not served; send {'an integer' if kind is int else 'a number'} "
                       f"in [{low}, {high}] (default {default})")
    return value


def detections_answer(found: dict, canvas: Canvas, classes: tuple[str, ...], threshold: float, limit: int) -> dict:
    """One image's detections at ``threshold``, the ``limit`` best, in its own pixels (JSON-able)."""
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in found.items()}
    kept = to_source_detections(tensors, canvas.valid, canvas.source, threshold)
    order = torch.argsort(kept["scores"], descending=True, stable=True)[:limit]
    labels = kept["labels"][order].tolist()
    height, width = canvas.source
    answer = {"width": width, "height": height, "boxes": kept["boxes"][order].tolist(),
              "labels": [_name(classes, c) for c in labels], "label_ids": labels,
              "scores": kept["scores"][order].tolist()}
    if "masks" in kept:
        binary = (kept["masks"][order] > MASK_THRESHOLD).to(torch.uint8).numpy()  # (N, H, W)
        answer["masks"] = [{"size": [height, width], "counts": counts.decode("ascii")} for counts in rle.encode(binary)]
    return answer


def segmentation_answer(logits: np.ndarray, canvas: Canvas, classes: tuple[str, ...], fmt: str) -> dict:
    """One image's label map, (K, S, S) logits -> class ids in its own (H, W) pixels, as a PNG or per-class RLE."""
    label_map = to_source(torch.from_numpy(logits.argmax(0)), canvas.valid, canvas.source).numpy()  # (H, W)
    height, width = canvas.source
    answer = {"width": width, "height": height}
    if fmt == "png":
        return {**answer, "label_map": png_base64(label_map, len(classes))}
    present = np.unique(label_map).tolist()
    masks = rle.encode(np.stack([label_map == c for c in present]).astype(np.uint8))
    return {**answer, "masks": [{"label_id": c, "label": _name(classes, c), "pixels": int((label_map == c).sum()),
                                 "size": [height, width], "counts": counts.decode("ascii")}
                                for c, counts in zip(present, masks)]}


def png_base64(label_map: np.ndarray, num_classes: int) -> str:
    """(H, W) class ids -> base64 of a grayscale PNG: 8-bit up to 256 classes, 16-bit above."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(label_map.astype(np.uint8 if num_classes <= 256 else np.uint16)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _name(classes: tuple[str, ...], index: int) -> str:
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


def infer_outputs(outputs, task: str) -> list[dict]:
    """The OIP v2 output tensors of a dense model's batch: a segmenter's logits; a detector's detections of
    every image concatenated, with ``batch_index`` (N,) naming each one's image."""
    if task == "segment":
        return [_tensor("logits", outputs)]  # (B, K, S, S)
    names = list(outputs[0]) if outputs else ["boxes", "labels", "scores"]
    index = np.concatenate([np.full(len(found["scores"]), k, np.int64) for k, found in enumerate(outputs)])
    tensors = [_tensor(key, np.concatenate([found[key] for found in outputs])) for key in names]
    return tensors + [_tensor("batch_index", index)]


def _tensor(name: str, array: np.ndarray) -> dict:
    datatype = "INT64" if np.issubdtype(array.dtype, np.integer) else "FP32"
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.reshape(-1).tolist()}


def metadata_tensors(task: str, size: int, num_classes: int) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of the OIP model metadata: [0, 1] images at S x S (UINT8: raw pixels) and the outputs."""
    shape = [-1, 3, size, size]
    inputs = [{"name": "input", "datatype": "FP32", "shape": shape},
              {"name": "input_uint8", "datatype": "UINT8", "shape": shape}]
    if task == "segment":
        return inputs, [{"name": "logits", "datatype": "FP32", "shape": [-1, num_classes, size, size]}]
    outputs = [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
               {"name": "labels", "datatype": "INT64", "shape": [-1]},
               {"name": "scores", "datatype": "FP32", "shape": [-1]}]
    if task == "instance":
        outputs.append({"name": "masks", "datatype": "FP32", "shape": [-1, 1, size, size]})
    return inputs, outputs + [{"name": "batch_index", "datatype": "INT64", "shape": [-1]}]
