"""Scenes of real handwriting: scikit-learn's 8x8 digits placed on builtin:shapes' textured backgrounds, as COCO.

Each image (``size`` px square) holds 1..``objects`` digits, each upscaled (bilinear) to a random
side of 16-28 px, placed at random, painted back to front in an ink colour on the far side of the
background's luminance. An instance mask is the digit's strokes (upscaled intensity above half its
peak) minus what later digits cover; a digit left with under 20 px visible is not painted. Boxes
are the masks' tight boxes; the category is the digit (ids 1..10 for 0..9). The train images come
from the first 1,200 digits of the set and the test images from the remaining 597, so no test
digit was seen in training. Written as ``ROOT/{train,val}/*.png`` and
``ROOT/annotations/instances_{train,val}.json`` (RLE masks), which ``--data coco:ROOT`` reads.

Usage: python benchmarks/digit_scenes.py ROOT [--size 64] [--train 200] [--test 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from sklearn.datasets import load_digits

from vipr.data.shapes import _backgrounds

TRAIN_DIGITS = 1200  # digits 0..1199 make train scenes, the rest test scenes
MIN_PIXELS = 20
SIDES = (16, 28)  # px, the digit's upscaled side


def write_digit_scenes(root: str | Path, size: int = 64, train: int = 200, test: int = 50, objects: int = 3,
                       seed: int = 0) -> Path:
    """Write both splits under ``root``; returns it."""
    root = Path(root)
    digits = load_digits()
    pools = {"train": np.arange(TRAIN_DIGITS), "test": np.arange(TRAIN_DIGITS, len(digits.images))}
    for split, count, folder in (("train", train, "train"), ("test", test, "val")):
        rng = np.random.default_rng([seed, len(folder)])
        (root / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            picture, instances = _scene(digits, pools[split], size, objects, rng)
            name = f"{i:06d}.png"
            Image.fromarray(picture).save(root / folder / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for label, mask in instances:
                annotations.append(_annotation(len(annotations) + 1, i + 1, label, mask))
        categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def _scene(digits, pool: np.ndarray, size: int, objects: int, rng: np.random.Generator):
    """uint8 (S, S, 3) picture and [(digit, bool (S, S) visible mask)] of one scene."""
    grid = np.linspace(-1, 1, size, dtype=np.float32)
    background, ink = _backgrounds(1, *np.meshgrid(grid, grid), rng)
    picture = background[0]  # (3, S, S) in [0, 1]
    layers = []
    for _ in range(rng.integers(1, objects + 1)):
        k = int(rng.choice(pool))
        side = int(rng.integers(SIDES[0], SIDES[1] + 1))
        strokes = F.interpolate(torch.from_numpy(digits.images[k][None, None] / 16.0).float(), size=(side, side),
                                mode="bilinear", align_corners=False)[0, 0].numpy()
        y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
        coverage = np.zeros((size, size), np.float32)
        coverage[y:y + side, x:x + side] = strokes
        picture = picture * (1 - coverage) + ink[0][:, None, None] * coverage  # painted over what lies below
        layers.append((int(digits.target[k]), coverage > 0.5 * strokes.max()))
    visible = []
    for i, (label, mask) in enumerate(layers):
        for _, later in layers[i + 1:]:
            mask = mask & ~later
        if mask.sum() >= MIN_PIXELS:
            visible.append((label, mask))
    return (np.clip(picture, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8), visible


def _annotation(ann_id: int, image_id: int, label: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {"id": ann_id, "image_id": image_id, "category_id": label + 1, "bbox": [x, y, w, h],
            "area": float(mask.sum()), "iscrowd": 0,
            "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_digit_scenes(args.root, args.size, args.train, args.test, seed=args.seed))


if __name__ == "__main__":
    main()
