"""torchvision's detection reference data path (references/detection), for benchmarks/detect_throughput.py.

A COCO tree read image by image, as its ``CocoDetection`` + ``ConvertCocoPolysToMask`` do (PIL
decode, polygons / RLE -> uint8 masks, xywh -> xyxy, crowds and degenerate boxes dropped), then
its "hflip" preset per image on tv_tensors: RandomHorizontalFlip(0.5), PILToTensor,
ToDtype(float32, scale=True). Run inside DataLoader workers, collated into lists
(``utils.collate_fn``). Not part of vipr: the peer's recipe, rebuilt to measure against.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

FOLDERS = {"train": "train", "test": "val"}


class CocoFiles(torch.utils.data.Dataset):
    """(image float (3, H, W) in [0, 1], target dict) of one split of a COCO tree, decoded per item."""

    def __init__(self, root: Path, split: str):
        folder = FOLDERS[split]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading times
            self.coco = COCO(str(root / "annotations" / f"instances_{folder}.json"))
        self.images, self.ids = root / folder, sorted(self.coco.imgs)
        self.transform = T.Compose([T.RandomHorizontalFlip(0.5), T.ToImage(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        info = self.coco.imgs[self.ids[i]]
        image = Image.open(self.images / info["file_name"]).convert("RGB")
        h, w = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns[info["id"]] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        masks = torch.from_numpy(np.stack([_mask(a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {"boxes": tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w)),
                  "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)[keep],
                  "masks": tv_tensors.Mask(masks[keep])}
        image, target = self.transform(image, target)
        return image, {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"],
                       "masks": target["masks"].as_subclass(torch.Tensor)}


def _mask(ann: dict, h: int, w: int) -> np.ndarray:
    """uint8 (h, w) mask of a COCO annotation: polygons merged, or an RLE decoded."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(np.uint8)


def collate(batch):
    """references/detection/utils.collate_fn: a tuple of images and a tuple of targets."""
    return tuple(zip(*batch))
