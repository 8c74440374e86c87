"""Request bodies -> model inputs, or a :class:`BadInput` naming what was wrong (an HTTP 4xx).

* :func:`parse_infer_request`: an Open Inference Protocol v2 ``infer`` body (FP32 normalised,
  or UINT8 raw pixels, NCHW at the model's size) -> rows for the batcher;
* :func:`decode_image`: image file bytes -> uint8 (3, H, W), centre-cropped to a square (classifiers);
* :func:`decode_canvas_image`: image file bytes -> a :class:`Canvas`, letterboxed onto the S x S canvas
  of a detection or segmentation model (vipr.data.dense.canvas, as training and ``vipr transfer predict``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np

DATATYPES = {"FP32": np.float32, "UINT8": np.uint8}


class BadInput(Exception):
    """A client error: ``status`` is the HTTP code, the message says what to send instead."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_infer_request(body: bytes, image_size: int, max_batch_size: int) -> tuple[str, np.ndarray, str | None]:
    """The body's one input tensor -> (datatype, array (B, 3, S, S), request id) with B <= ``max_batch_size``.

    The id is the request's optional ``"id"`` string, which the response echoes (OIP v2), or None.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInput(f"the body is not valid JSON ({err}); send {{\"inputs\": [{{\"name\", \"shape\", "
                       f"\"datatype\", \"data\"}}]}}") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadInput("send exactly one tensor: {\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}]}")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadInput(f"the request id must be a string, got {request_id!r}")
    tensor = inputs[0]
    missing = [key for key in ("shape", "datatype", "data") if key not in tensor]
    if missing:
        raise BadInput(f"input tensor lacks {', '.join(missing)}")
    datatype = tensor["datatype"]
    if datatype not in DATATYPES:
        raise BadInput(f"datatype {datatype!r} is not served; use FP32 (normalised) or UINT8 (raw pixels)")
    shape = _check_shape(tensor["shape"], image_size, max_batch_size)
    return datatype, _to_array(tensor["data"], shape, datatype), request_id


def _check_shape(shape, image_size: int, max_batch_size: int) -> list[int]:
    expected = f"[B, 3, {image_size}, {image_size}] with 1 <= B <= {max_batch_size}"
    valid = isinstance(shape, list) and len(shape) == 4 and all(type(d) is int for d in shape)
    if not valid or shape[1:] != [3, image_size, image_size] or not 1 <= shape[0] <= max_batch_size:
        raise BadInput(f"shape {shape!r} is not served; send NCHW {expected}")
    return shape


def _to_array(data, shape: list[int], datatype: str) -> np.ndarray:
    try:
        values = np.asarray(data, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BadInput(f"data must be a flat (or nested) list of numbers for {datatype}") from None
    needed = math.prod(shape)
    if values.size != needed:
        raise BadInput(f"data has {values.size} values but shape {shape} needs {needed}")
    if not np.isfinite(values).all():
        raise BadInput("data contains NaN or infinity")
    if datatype == "UINT8" and ((values < 0) | (values > 255) | (values != np.round(values))).any():
        raise BadInput("UINT8 data must be whole numbers in 0..255")
    return values.astype(DATATYPES[datatype]).reshape(shape)


def decode_image(content: bytes, filename: str, max_pixels: int) -> np.ndarray:
    """Image bytes (any format PIL reads) -> uint8 (3, side, side), the centred square crop."""
    image = _open_image(content, filename, max_pixels)
    width, height = image.size
    try:
        image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError):
        raise BadInput(f"{filename!r} is a truncated or corrupt image") from None
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8)  # (side, side, 3)
    return np.ascontiguousarray(square.transpose(2, 0, 1))  # (3, side, side)


@dataclass(frozen=True)
class Canvas:
    """An image letterboxed onto a dense model's canvas, with what maps predictions back to its own pixels."""

    pixels: np.ndarray  # uint8 (3, S, S): the image resized top-left (longer side S), zeros elsewhere
    valid: tuple[int, int]  # (h, w) px the image covers on the canvas
    source: tuple[int, int]  # (H, W) px of the image as sent


def decode_canvas_image(content: bytes, filename: str, max_pixels: int, size: int) -> Canvas:
    """Image bytes -> its :class:`Canvas` of side ``size``, by vipr.data.dense.canvas.decode_canvas."""
    from vipr.data.dense.canvas import decode_canvas

    _open_image(content, filename, max_pixels)  # the header: not an image, or too large, before decoding
    decoded = decode_canvas(io.BytesIO(content), size)
    if isinstance(decoded, str):
        raise BadInput(f"{filename!r} is a truncated or corrupt image ({decoded})")
    pixels, valid, source = decoded
    return Canvas(pixels, valid, source)


def _open_image(content: bytes, filename: str, max_pixels: int):
    """The PIL image of ``content`` with only its header read; BadInput if unreadable (400) or too large (413)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(content))
        width, height = image.size  # read from the header: nothing is decoded yet
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadInput(f"{filename!r} is not an image PIL can read (PNG, JPEG, ...)") from None
    if width * height > max_pixels:
        raise BadInput(f"{filename!r} is {width}x{height} = {width * height} pixels, over the limit of "
                       f"{max_pixels}; resize it before sending", status=413)
    return image
