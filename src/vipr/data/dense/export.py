"""A dense split as COCO instances: the ground truth pycocotools evaluates against, or a COCO tree on disk.

``coco_ground_truth`` is in canvas pixels (every image ``S x S``), the frame the store and the
models work in, so predictions need no mapping back. ``write_coco`` writes each image at its
valid size with its annotations (RLE masks), a tree ``coco:ROOT`` reads back to the same store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from vipr.data.dense.rle import decode_rows
from vipr.data.dense.types import DenseDataset, DenseSplit
from vipr.fsutil import atomic_write_text


def coco_ground_truth(ds: DenseDataset, split: str = "test") -> dict:
    """COCO instances dict of ``split`` in canvas pixels: images S x S, bbox xywh, RLE masks, areas.

    Category ids are the dataset's ``category_ids`` (COCO's own for a COCO source); annotation ids
    run from 1 (pycocotools treats id 0 as missing). Load it with ``COCO()`` + ``dataset = ...``.
    """
    data = _split(ds, split)
    size = data.canvas_size
    images = [{"id": int(data.image_ids[i]), "file_name": data.names[i], "width": size, "height": size}
              for i in range(len(data))]
    return {"images": images, "annotations": _annotations(data, ds.category_ids, crop=False),
            "categories": [{"id": cid, "name": name} for cid, name in zip(ds.category_ids[1:], ds.classes[1:])]}


def write_coco(ds: DenseDataset, root: str | Path) -> Path:
    """Write ``ROOT/{train,val}/*.png`` and ``ROOT/annotations/instances_{train,val}.json`` for the splits."""
    root = Path(root)
    for split, folder in (("train", "train"), ("test", "val")):
        data = getattr(ds, split)
        if data is None:
            continue
        (root / folder).mkdir(parents=True, exist_ok=True)
        images = []
        for i in range(len(data)):
            h, w = (int(v) for v in data.sizes[i])
            name = f"{i:06d}.png"
            Image.fromarray(np.asarray(data.images[i])[:, :h, :w].transpose(1, 2, 0)).save(root / folder / name)
            images.append({"id": int(data.image_ids[i]), "file_name": name, "width": w, "height": h})
        instances = {"images": images, "annotations": _annotations(data, ds.category_ids, crop=True),
                     "categories": [{"id": c, "name": n} for c, n in zip(ds.category_ids[1:], ds.classes[1:])]}
        (root / "annotations").mkdir(exist_ok=True)
        atomic_write_text(root / "annotations" / f"instances_{folder}.json", json.dumps(instances))
    return root


def _annotations(data: DenseSplit, category_ids: list[int], *, crop: bool) -> list[dict]:
    """One COCO annotation per instance; ``crop``: masks cut to each image's valid region."""
    inst, out = data.instances, []
    for i in range(len(data)):
        rows = data.rows(i)
        masks = decode_rows(inst, rows, data.canvas_size) if data.has_masks else None
        h, w = (int(v) for v in data.sizes[i])
        for k, row in enumerate(range(rows.start, rows.stop)):
            x0, y0, x1, y1 = (float(v) for v in inst.boxes[row])
            ann = {"id": len(out) + 1, "image_id": int(data.image_ids[i]), "category_id": category_ids[inst.labels[row]],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(inst.iscrowd[row]), "area": (x1 - x0) * (y1 - y0),
                   "difficult": int(inst.difficult[row])}  # VOC mAP ignores these; pycocotools ignores the key
            if masks is not None:
                mask = masks[k, :h, :w] if crop else masks[k]
                rle = mask_utils.encode(np.asfortranarray(mask))
                ann["segmentation"] = {"size": list(mask.shape), "counts": rle["counts"].decode()}
                ann["area"] = float(mask.sum())
            out.append(ann)
    return out


def _split(ds: DenseDataset, split: str) -> DenseSplit:
    data = getattr(ds, split, None) if split in ("train", "test") else None
    if data is None:
        raise ValueError(f"{ds.name} has no {split!r} split; use 'train' or 'test' where present")
    return data
