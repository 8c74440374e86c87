"""Real-photograph patch sets for the quality benchmarks, regenerated from photos shipped in packages.

    python benchmarks/photo_sets.py photos     # writes benchmarks/results/data/photos.npz
    python benchmarks/photo_sets.py photos_b

Each class is one photograph; its patches are 32 px crops. Train patches come from the left
70% of the photo and test patches from the right 30%, so no test pixel was ever seen in
training (random positions inside each region; train patches may overlap one another).

``photos`` is the development set: scikit-image's camera, cell, clock, coins, colorwheel,
moon, page, text and logo and scikit-learn's china and flower (11 classes; the same photos as
``../shared/data/photo-patches-dev.npz``, cut by this script's rule). Scikit-image's other
sample photos are left alone: they are kept for independent checks.

``photos_b`` is a second source built from photos no default was tuned on: PyWavelets' aero
and ascent, matplotlib's grace_hopper and its MRI slice (s1045) and Jacksboro terrain relief,
and mahotas' DepartmentStore, nuclear and luispedro (8 classes).
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "results" / "data"
PATCH = 32  # px
SHORT_SIDE = 192  # px: each photo is resized so its short side is this, before cutting
TRAIN_PER_CLASS, TEST_PER_CLASS = 100, 40
TRAIN_SHARE = 0.7  # of the photo's width, left part for train patches


def _to_rgb(array: np.ndarray) -> Image.Image:
    """Any 2-D or 3-D photo array (uint8, uint16 or float) as an 8-bit RGB image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = (255 * (a - a.min()) / max(np.ptp(a), 1e-12)).astype(np.uint8)
    image = Image.fromarray(a)
    return image.convert("RGB")


def _skimage(name: str) -> Image.Image:
    import skimage.data

    return _to_rgb(getattr(skimage.data, name)())


def _sklearn(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return _to_rgb(load_sample_image(f"{name}.jpg"))


def _pywt(name: str) -> Image.Image:
    import pywt.data

    return _to_rgb(getattr(pywt.data, name)())


def _matplotlib(name: str) -> Image.Image:
    from matplotlib import cbook

    if name == "mri":  # 256 x 256 uint16 big-endian slice
        with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False), "rb") as f:
            return _to_rgb(np.frombuffer(f.read(), np.dtype(">u2")).reshape(256, 256))
    if name == "terrain":  # elevation in metres, shown as relief
        return _to_rgb(np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))["elevation"])
    return _to_rgb(np.asarray(Image.open(cbook.get_sample_data(name, asfileobj=False))))


def _mahotas(name: str) -> Image.Image:
    import mahotas.demos

    return _to_rgb(np.asarray(Image.open(os.path.join(os.path.dirname(mahotas.demos.__file__), "data", name))))


SETS = {
    "photos": [("camera", _skimage), ("cell", _skimage), ("china", _sklearn), ("clock", _skimage),
               ("coins", _skimage), ("colorwheel", _skimage), ("flower", _sklearn), ("logo", _skimage),
               ("moon", _skimage), ("page", _skimage), ("text", _skimage)],
    "photos_b": [("aero", _pywt), ("ascent", _pywt), ("grace_hopper.jpg", _matplotlib), ("mri", _matplotlib),
                 ("terrain", _matplotlib), ("DepartmentStore.jpg", _mahotas), ("nuclear.png", _mahotas),
                 ("luispedro.jpg", _mahotas)],
}


def cut_patches(image: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) uint8 patches (n, 32, 32, 3) from the left and right parts of one photo."""
    scale = SHORT_SIDE / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    pixels = np.asarray(image)
    split = int(pixels.shape[1] * TRAIN_SHARE)
    return (_random_patches(pixels[:, :split], TRAIN_PER_CLASS, rng),
            _random_patches(pixels[:, split:], TEST_PER_CLASS, rng))


def _random_patches(region: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    ys = rng.integers(0, region.shape[0] - PATCH + 1, count)
    xs = rng.integers(0, region.shape[1] - PATCH + 1, count)
    return np.stack([region[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs)])


def build(name: str, seed: int = 0) -> Path:
    """Write (or reuse) ``benchmarks/results/data/NAME.npz`` in the npz layout ``--data`` accepts."""
    path = DATA_DIR / f"{name}.npz"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    parts = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    classes = []
    for label, (photo, loader) in enumerate(SETS[name]):
        train, test = cut_patches(loader(photo), rng)
        parts["x_train"].append(train)
        parts["x_test"].append(test)
        parts["y_train"].append(np.full(len(train), label))
        parts["y_test"].append(np.full(len(test), label))
        classes.append(Path(photo).stem.lower())
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.concatenate(v) for k, v in parts.items()}, classes=np.array(classes))
    os.replace(tmp, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(SETS))
    print(build(parser.parse_args().name))


if __name__ == "__main__":
    main()
