"""A JSON-ready summary of a detection / segmentation dataset (what ``vipr data info`` prints for it)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from vipr.data.dense.types import DenseDataset, DenseSplit
from vipr.data.info import _table

MAX_SKIPPED_SHOWN = 10  # the full list is the store's skipped.txt
SMALL, MEDIUM = 32**2, 96**2  # COCO's area thresholds, in source-image pixels


def dense_info(ds: DenseDataset) -> dict:
    """Name, digest, classes, canvas, per split: instances per class, box sizes, semantic pixel shares; skipped.

    Examples:
        >>> info = dense_info(open_dense("builtin:scenes?train=8&test=0&size=64"))
        >>> sorted(info["splits"]["train"]["box_sizes"])
        ['large', 'medium', 'small']
    """
    return {
        "name": ds.name,
        "kind": ds.kind,
        "digest": ds.digest,
        "num_classes": ds.num_classes,  # with the background
        "classes": list(ds.classes),
        "canvas": ds.train.canvas_size,  # every image lies on an S x S canvas, top-left, zero padding
        "masks": ds.train.has_masks,
        "semantic": ds.train.semantic_maps is not None,
        "splits": {split: None if data is None else _split_info(data, ds.classes, ds.stats.get(split, {}))
                   for split, data in (("train", ds.train), ("test", ds.test))},
        "clipped_boxes": ds.clipped,
        "skipped": {"count": len(ds.skipped), "file": ds.skipped_file,
                    "by_reason": _reasons(ds.skipped),
                    "first": [list(item) for item in ds.skipped[:MAX_SKIPPED_SHOWN]]},
    }


def dense_source_info(src: str) -> dict | None:
    """``dense_info`` of ``src`` if it is a detection / segmentation source, else None (classification data).

    ``vipr data info`` calls this first, so the classification report stays as it is.
    """
    from vipr.data.dense.sources import is_dense_source, open_dense

    return dense_info(open_dense(src)) if is_dense_source(src) else None


def format_dense_info(info: dict) -> str:
    """The human table of a ``dense_info`` record: canvas, targets, a split table, a class table, skips."""
    splits = {name: split for name, split in info["splits"].items() if split is not None}
    boxes = info["kind"] != "masks"  # a mask folder pair has semantic maps only
    targets = [t for t, on in (("boxes", boxes), ("instance masks", info["masks"]),
                               ("semantic maps", info["semantic"])) if on]
    lines = [f"dataset     {info['name']} ({info['kind']}, digest {info['digest']})",
             f"canvas      {info['canvas']} x {info['canvas']} px (longer side resized, top-left, zero padding)",
             f"targets     {', '.join(targets) or 'none'}",
             "classes     " + (f"{info['num_classes'] - 1} and the background" if boxes else f"{info['num_classes']}"),
             ""]
    if boxes:
        lines += _table(["split", "images", "no objects", "instances", "crowd", "small", "medium", "large"],
                        [[name, s["images"], s["images_without_instances"], s["instances"], s["crowd"],
                          *s["box_sizes"].values()] for name, s in splits.items()])
        lines += ["(box sizes as COCO counts them: small < 32 x 32, medium < 96 x 96 px of the source image)"]
    else:
        lines += _table(["split", "images"], [[name, s["images"]] for name, s in splits.items()])
    lines += [""] + _table(["class", *(f"{name} {what}" for name in splits for what in _class_columns(info, boxes))],
                           [[cls, *(v for s in splits.values() for v in _class_cells(s, cls, info, boxes))]
                            for cls in info["classes"][1 if boxes else 0:]])
    skipped = info["skipped"]
    lines += [""] + ([f"clipped boxes: {info['clipped_boxes']}"] if boxes else []) + [
              f"skipped: {skipped['count']}" + (f" (list: {skipped['file']})" if skipped["count"] else "")]
    lines += [f"  {count:>6}  {reason}" for reason, count in skipped["by_reason"].items()]
    return "\n".join(lines)


def _class_columns(info: dict, boxes: bool) -> list[str]:
    return (["objects"] if boxes else []) + (["pixels %"] if info["semantic"] else [])


def _class_cells(split: dict, cls: str, info: dict, boxes: bool) -> list:
    cells = [split["instances_per_class"].get(cls, 0)] if boxes else []
    if info["semantic"]:
        cells.append(f"{100 * split.get('semantic_pixel_share', {}).get(cls, 0):.1f}")
    return cells


def box_areas(split: DenseSplit) -> np.ndarray:
    """float64 (M,) area of every box in source-image pixels (canvas area over the image's scale)."""
    inst = split.instances
    owner = np.repeat(np.arange(len(split)), np.diff(inst.offsets))
    scale = split.sizes.astype(np.float64) / np.maximum(split.orig_sizes, 1)  # (N, 2) canvas / source
    wh = (inst.boxes[:, 2:] - inst.boxes[:, :2]).astype(np.float64)
    return wh[:, 0] * wh[:, 1] / (scale[owner, 0] * scale[owner, 1])


def _split_info(split: DenseSplit, classes: list[str], stats: dict) -> dict:
    inst = split.instances
    crowd = inst.iscrowd.astype(bool)
    counts = np.bincount(inst.labels[~crowd], minlength=len(classes))
    areas = box_areas(split)[~crowd]
    info = {
        "images": len(split),
        "images_without_instances": int((np.diff(inst.offsets) == 0).sum()),
        "instances": int((~crowd).sum()),
        "crowd": int(crowd.sum()),
        "difficult": int(inst.difficult.sum()),
        "instances_per_class": {name: int(c) for name, c in zip(classes[1:], counts[1:])},
        "box_sizes": {"small": int((areas < SMALL).sum()), "medium": int(((areas >= SMALL) & (areas < MEDIUM)).sum()),
                      "large": int((areas >= MEDIUM).sum())},  # COCO: area < 32^2, < 96^2, else
    }
    if "semantic_pixels" in stats:
        pixels = np.asarray(stats["semantic_pixels"], np.float64)
        total = max(float(pixels.sum()), 1.0)
        info["semantic_pixel_share"] = {name: round(float(pixels[k]) / total, 4) for k, name in enumerate(classes)}
        info["semantic_pixel_share"]["ignore"] = round(float(pixels[255]) / total, 4)
    return info


def _reasons(skipped: list) -> dict[str, int]:
    """Count of skipped items per kind of reason: the reason with its lists, quotes and numbers blanked."""
    def kind(reason: str) -> str:
        reason = re.sub(r"\[[^\]]*\]", "[...]", reason.split(";")[0])
        return re.sub(r"-?\d+(\.\d+)?", "N", re.sub(r"'[^']*'", "'...'", reason)).strip()
    return dict(Counter(kind(item[3]) for item in skipped if len(item) > 3).most_common())
