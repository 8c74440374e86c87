"""Sources that arrive as arrays: CIFAR-10/100 python batches and .npz files, and the helpers
every generated or array source shares to resize to the store size and write a split."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vipr.data.store import StoreWriter
from vipr.errors import DataError

CIFAR_FOLDERS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}
CIFAR_FILES = {  # kind: (train files, test files, meta file, label key, class-name key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", b"labels", b"label_names"),
    "cifar100": (["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ---- shared: resize to the store size and write one split ---------------------------------------

def fit(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (N, 3, size, size): shorter side to ``size``, centre crop; None: unchanged."""
    if size is None or images.shape[2:] == (size, size):
        return images
    h, w = images.shape[2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8).numpy()


def store_split(writer: StoreWriter, split: str, images: np.ndarray, labels: np.ndarray, size: int | None) -> None:
    """Write in-RAM uint8 NCHW ``images`` to the store, resized chunk by chunk when ``size`` is set."""
    n, _, h, w = images.shape
    out = writer.allocate(split, n, size or h, size or w)
    step = max(1, (16 << 20) // max(1, 3 * h * w))  # ~16 MiB of source pixels a chunk
    for start in range(0, n, step):
        out[start:start + step] = fit(images[start:start + step], size)
    writer.finish_split(split, out, labels)


# ---- CIFAR-10/100 python batches ----------------------------------------------------------------

def find_cifar(path: Path) -> tuple[str, Path, list[Path]] | None:
    """(kind, batches folder, files it needs) if ``path`` is a CIFAR folder or the parent of exactly one."""
    kind = CIFAR_FOLDERS.get(path.name) or ("cifar10" if (path / "batches.meta").is_file() else None) \
        or ("cifar100" if (path / "meta").is_file() and (path / "train").is_file() else None)
    if kind is None:
        found = [name for name in CIFAR_FOLDERS if (path / name).is_dir()]
        if len(found) > 1:
            raise DataError(f"{path} holds both {found[0]}/ and {found[1]}/; pass one of them as the data source")
        if not found:
            return None
        path, kind = path / found[0], CIFAR_FOLDERS[found[0]]
    train, test, meta, _, _ = CIFAR_FILES[kind]
    files = [path / name for name in (*train, *test, meta)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"CIFAR folder {path} lacks {missing}; re-extract the archive from the authors' site")
    return kind, path, files


class _NumpyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow the numpy array constructors they need, never arbitrary code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"numpy.{core}.{mod}", name) for core in ("core", "_core")
        for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(path: Path, *keys: bytes) -> list:
    """The values of ``keys`` in the CIFAR pickle at ``path`` (loaded with ``encoding="bytes"``)."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyUnpickler(f, encoding="bytes").load()
        return [batch[key] for key in keys]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not a readable CIFAR python batch with keys {keys} ({type(e).__name__}: {e}); "
                        f"re-extract the archive from the authors' site") from None


def build_cifar(writer: StoreWriter, kind: str, folder: Path, store_size: int | None) -> dict:
    train_files, test_files, meta_file, label_key, names_key = CIFAR_FILES[kind]
    classes = [name.decode() for name in _unpickle(folder / meta_file, names_key)[0]]
    for split, names in (("train", train_files), ("test", test_files)):
        batches = [_unpickle(folder / name, b"data", label_key) for name in names]
        images = np.concatenate([np.asarray(data, np.uint8) for data, _ in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(labels, np.int64) for _, labels in batches])
        store_split(writer, split, images, labels, store_size)
    return {"classes": classes, "skipped": []}


# ---- .npz arrays --------------------------------------------------------------------------------

def build_npz(writer: StoreWriter, path: Path, store_size: int | None) -> dict:
    try:
        archive = np.load(path, allow_pickle=False)  # never unpickle objects from a data file
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as a .npz archive ({e}); save it with np.savez") from None
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise DataError(f"{path} lacks {missing} (holds {archive.files}); save it with "
                            f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
        splits = {s: (_npz_images(archive, f"x_{s}", path), _npz_labels(archive, f"y_{s}", path))
                  for s in ("train", "test")}
        classes = _npz_classes(archive, path, max(int(y.max(initial=-1)) for _, y in splits.values()) + 1)
    for split, (images, labels) in splits.items():
        if len(images) != len(labels):
            raise DataError(f"{path}: x_{split} holds {len(images)} images but y_{split} {len(labels)} labels")
        if split == "train" or len(images):  # an empty x_test means no test split
            store_split(writer, split, images, labels, store_size)
    return {"classes": classes, "skipped": []}


def _npz_images(archive, key: str, path: Path) -> np.ndarray:
    """uint8 NHWC, NCHW, (N, H, W) or (N, H, W, 1) -> uint8 (N, 3, H, W)."""
    x = archive[key]
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {key} has dtype {x.dtype}, expected uint8; convert it with "
                        f"np.clip(x * 255, 0, 255).round().astype(np.uint8) (for floats in [0, 1])")
    if x.ndim == 3:
        x = x[:, None]
    channels_last = x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    if x.ndim != 4 or not (channels_last or x.shape[1] in (1, 3)):
        raise DataError(f"{path}: {key} has shape {x.shape}; expected (N, H, W, 3), (N, 3, H, W) or (N, H, W)")
    x = x.transpose(0, 3, 1, 2) if channels_last else x
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def _npz_labels(archive, key: str, path: Path) -> np.ndarray:
    y = archive[key]
    if not np.issubdtype(y.dtype, np.integer) or y.squeeze().ndim > 1 or (y.size and y.min() < -1):
        raise DataError(f"{path}: {key} must be integer class ids >= -1 of shape (N,), got {y.dtype} {y.shape}")
    return y.reshape(-1).astype(np.int64)


def _npz_classes(archive, path: Path, num_classes: int) -> list[str]:
    if "classes" not in archive.files:
        return [str(k) for k in range(num_classes)]
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in archive["classes"].reshape(-1)]
    except ValueError:
        raise DataError(f"{path}: classes must be a string array; save it as np.array(names, dtype=str)") from None
    if len(names) < num_classes:
        raise DataError(f"{path}: labels go up to {num_classes - 1} but classes names only {len(names)}")
    return names
