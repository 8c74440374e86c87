"""Predictions of a detection or segmentation model on image files, as COCO results and pictures a person can read.

Each image is letterboxed onto the model's S x S canvas (vipr.data.dense.canvas), predicted, and
mapped back to its own pixels: boxes scaled by source / valid size, masks and label maps cropped to
the valid region and resized (nearest). ``predictions.json`` holds COCO result dicts (``image_id``
is the image's position from 1, ``file_name`` its path; boxes xywh; masks compressed RLE) or, for
segmentation, the label map's file per image; ``<stem>.png`` draws boxes, labels, scores and masks
(or the coloured label map) over the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from vipr.data.dense.canvas import decode_canvas
from vipr.engine.card import ModelCard
from vipr.errors import DataError
from vipr.fsutil import atomic_write_text
from vipr.transfer.metrics import detections_to_coco

MASK_THRESHOLD = 0.5  # Mask R-CNN's probabilities -> binary masks, as COCO evaluation


def load_canvas(path: str, canvas: int) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """uint8 (3, S, S) canvas, valid (h, w) and source (H, W) of an image file; DataError naming it otherwise."""
    decoded = decode_canvas(str(path), canvas)
    if isinstance(decoded, str):
        raise DataError(f"cannot read image {path} ({decoded}); pass PNG / JPEG / BMP / TIFF files")
    image, valid, orig = decoded
    return torch.from_numpy(image), valid, orig


@torch.no_grad()
def predict_files(model: torch.nn.Module, card: ModelCard, paths: list[str], out: Path, device: torch.device,
                  score_thresh: float = 0.5) -> dict:
    """Predict every file of ``paths``; writes ``out``/predictions.json and one PNG per image; returns a summary."""
    out.mkdir(parents=True, exist_ok=True)
    loaded = [load_canvas(p, card.image_size) for p in paths]  # every unreadable file fails before any work
    model.eval()
    results, drawn = [], []
    for image_id, (path, (canvas, valid, orig)) in enumerate(zip(paths, loaded), start=1):
        x = canvas.to(device).float().div(255).unsqueeze(0)  # (1, 3, S, S) in [0, 1]
        source = _source_pixels(canvas, valid, orig)  # (3, H, W) uint8
        picture = out / f"{Path(path).stem}.png"
        if card.task == "segment":
            label_map = to_source(model(x)[0].argmax(0), valid, orig)  # (H, W) int64
            results.append(_write_label_map(label_map, out / f"{Path(path).stem}_labels.png", image_id, path))
            image = _draw_segmentation(source, label_map, card.num_classes)
        else:
            detections = to_source_detections(model([x[0]])[0], valid, orig, score_thresh)
            category_ids = card.extra.get("category_ids", list(range(card.num_classes)))
            for result in detections_to_coco([detections], [image_id], category_ids, mask_threshold=MASK_THRESHOLD):
                results.append({**result, "file_name": str(path)})
            image = _draw_detections(source, detections, card.classes)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(picture)
        drawn.append(str(picture))
    atomic_write_text(out / "predictions.json", json.dumps(results))
    return {"images": len(paths), "predictions": len(results), "file": str(out / "predictions.json"), "drawn": drawn}


def _source_pixels(canvas: torch.Tensor, valid: tuple[int, int], orig: tuple[int, int]) -> torch.Tensor:
    """The canvas' valid region resized back to the source size: (3, H, W) uint8, the picture drawn on."""
    h, w = valid
    region = canvas[:, :h, :w].unsqueeze(0).float()
    return F.interpolate(region, size=orig, mode="bilinear", align_corners=False)[0].round().clamp(0, 255).byte()


def to_source(maps: torch.Tensor, valid: tuple[int, int], orig: tuple[int, int]) -> torch.Tensor:
    """(..., S, S) maps cropped to the valid region and resized (nearest) to the source (..., H, W), on the CPU."""
    h, w = valid
    region = maps[..., :h, :w].float().cpu()
    flat = region.reshape(-1, 1, h, w)
    resized = F.interpolate(flat, size=orig, mode="nearest-exact")
    return resized.reshape(*maps.shape[:-2], *orig).to(maps.dtype)


def to_source_detections(detection: dict, valid: tuple[int, int], orig: tuple[int, int], score_thresh: float) -> dict:
    """One image's detections above ``score_thresh``, in source pixels (boxes clipped to the image and scaled,
    masks cropped and resized); a box left with no area inside the image (it lay in the padding) is dropped."""
    h, w = valid
    boxes = detection["boxes"].cpu()
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                         boxes[:, 3].clamp(0, h)], dim=1)  # (N, 4) xyxy inside the valid region
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = (detection["scores"].cpu() >= score_thresh) & inside
    scale = torch.tensor([orig[1] / w, orig[0] / h] * 2)  # x, y, x, y
    out = {"boxes": boxes[keep] * scale, "labels": detection["labels"].cpu()[keep],
           "scores": detection["scores"].cpu()[keep]}
    if "masks" in detection:
        out["masks"] = to_source(detection["masks"].cpu()[keep][:, 0], valid, orig)  # (N, H, W) probabilities
    return out


def _write_label_map(label_map: torch.Tensor, path: Path, image_id: int, source: str) -> dict:
    Image.fromarray(label_map.to(torch.uint8).numpy()).save(path)  # class index per pixel, as masks:ROOT reads
    counts = torch.bincount(label_map.flatten()).tolist()
    return {"image_id": image_id, "file_name": source, "label_map": str(path), "pixels_per_class": counts}


def _draw_detections(image: torch.Tensor, detections: dict, classes: tuple[str, ...]) -> torch.Tensor:
    if "masks" in detections and len(detections["masks"]):
        image = draw_segmentation_masks(image, detections["masks"] > MASK_THRESHOLD, alpha=0.45)
    labels = [f"{classes[int(c)]} {s:.2f}" for c, s in zip(detections["labels"], detections["scores"])]
    if not labels:
        return image
    return draw_bounding_boxes(image, detections["boxes"], labels=labels, width=2)


def _draw_segmentation(image: torch.Tensor, label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    masks = torch.stack([label_map == c for c in range(1, num_classes)]) if num_classes > 1 else None
    if masks is None or not masks.any():
        return image
    return draw_segmentation_masks(image, masks, alpha=0.5)

