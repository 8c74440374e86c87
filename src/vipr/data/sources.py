"""Open a data source by its SRC string, decoded once into the uint8 store (store.py).

SRC forms:

* ``builtin:digits`` -- scikit-learn's 1,797 8x8 digits, bilinear-upscaled to 32x32 RGB, with a
  fixed stratified 80/20 train/test split (``random_state=0``).
* ``builtin:shapes?classes=10&size=32&train=5000&test=1000&seed=0`` -- procedural shapes whose
  class is the shape; colour, textured background, position, scale and rotation vary per image.
* an image folder: ``ROOT/train/<class>/*`` with ``ROOT/val/<class>/*`` or ``ROOT/test/<class>/*``;
  ``ROOT/<class>/*`` (train only); or ``ROOT/*`` images with no class folders (unlabelled, train only).
* a CIFAR-10/100 python folder (``cifar-10-batches-py``, ``cifar-100-python``) or its parent.
* a ``.npz`` file with ``x_train, y_train, x_test, y_test`` (uint8) and optional ``classes``.
* ``NAME:V2`` (``NAME:2``, ``NAME:latest``, a registered bare ``NAME``) -- a version recorded by
  ``vipr data register``: its source, checked to hold the registered content (vipr.data.versions).

``store_size``: image folders are stored at store_size x store_size pixels (default 64: the
shorter side is resized, then centre-cropped). For the other sources ``None`` keeps the native
size and an integer resizes the same way (bilinear, antialiased).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vipr.data.arrays import build_cifar, build_npz, find_cifar, fit, store_split
from vipr.data.info import skipped_note
from vipr.data.shapes import SHAPE_NAMES, render_shapes
from vipr.data.store import StoreWriter, load_or_build, source_key
from vipr.data.types import Dataset
from vipr.data.versions import open_version, registered
from vipr.engine.progress import side_bar
from vipr.errors import DataError
from vipr.fsutil import cache_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_STORE_SIZE = 64  # pixels; image folders only: 12 KiB an image, room for 32-64 px crops
SOURCE_VERSION = 7  # part of every cache key: bump when decoding or generation changes its output
DECODE_WORKERS = min(16, os.cpu_count() or 1)  # PIL releases the GIL while decoding and resizing
SHAPES_DEFAULTS = {"classes": 10, "size": 32, "train": 5000, "test": 1000, "seed": 0}
SHAPES_LIMITS = {"classes": (2, 12), "size": (8, 1024), "train": (1, 10**8), "test": (0, 10**8), "seed": (0, 2**63)}
LAYOUTS = ("accepted folder layouts: ROOT/train/<class>/<images> with ROOT/val/<class>/... or "
           "ROOT/test/<class>/... ; ROOT/<class>/<images> (train only); ROOT/<images> (unlabelled)")
ACCEPTED = ("accepted data sources: builtin:digits; builtin:shapes[?classes=10&size=32&train=5000&test=1000&seed=0]; "
            "an image folder (ROOT/train/<class>/ with ROOT/val/ or ROOT/test/, or ROOT/<class>/); "
            "a CIFAR-10/100 python folder (cifar-10-batches-py, cifar-100-python) or its parent; "
            "a .npz file with x_train, y_train, x_test, y_test; a registered dataset NAME:V2 (vipr data list)")


def open_dataset(src: str, *, store_size: int | None = None,
                 cache_dir: str | os.PathLike | None = None, quiet: bool = False,
                 progress: bool = True) -> Dataset:
    """Open ``src`` (see the module docstring), decoding it into the cache on first use.

    Files that could not be decoded are skipped; unless ``quiet``, a one-line warning says how
    many and where they are listed (``vipr data info`` shows it in its table instead).
    ``progress=False`` (``--no-progress``): no decoding bar, even on a terminal.

    Examples:
        >>> ds = open_dataset("builtin:digits")
        >>> ds.train.images.shape, ds.classes[:3]
        ((1437, 3, 32, 32), ['0', '1', '2'])
    """
    if store_size is not None and (not isinstance(store_size, int) or store_size < 4):
        raise DataError(f"store_size must be an integer number of pixels >= 4, got {store_size!r}")
    version = registered(str(src))  # NAME:V2 of `vipr data register`: its recorded source, digest checked
    if version is not None:
        return open_version(version, "classification", open_dataset, store_size, cache_dir=cache_dir, quiet=quiet,
                            progress=progress)
    kind, key_parts, build = _resolve(str(src), store_size, progress)
    if kind == "folder":
        store_size = store_size or DEFAULT_STORE_SIZE
    key = source_key(kind, SOURCE_VERSION, store_size, *key_parts)
    dataset = load_or_build(cache_root(cache_dir), key, str(src), build, store_size)
    if dataset.skipped and not quiet and os.environ.get("RANK", "0") == "0":  # once under torchrun: rank 0
        warnings.warn(f"{src}: {skipped_note(len(dataset.skipped), dataset.skipped_file)}", stacklevel=2)
    return dataset


def _resolve(src: str, store_size: int | None, progress: bool = True):
    """(kind, parts that define the content, build function) for a SRC string."""
    if src.startswith("builtin:"):
        return _resolve_builtin(src, store_size)
    path = Path(src).expanduser()
    if not path.exists():
        raise DataError(f"data source {src!r} does not exist (no such file or folder); fix the path. {ACCEPTED}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            st = path.stat()
            return "npz", [str(path.resolve()), st.st_size, st.st_mtime_ns], lambda w: build_npz(w, path, store_size)
        raise DataError(f"unsupported data file {src!r}; {ACCEPTED}")
    cifar = find_cifar(path)
    if cifar:
        kind, folder, files = cifar
        listing = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return kind, listing, lambda w: build_cifar(w, kind, folder, store_size)
    return _resolve_folder(path, store_size or DEFAULT_STORE_SIZE, progress)


# ---- built-ins ---------------------------------------------------------------------------------

def _resolve_builtin(src: str, store_size: int | None):
    name, _, query = src[len("builtin:"):].partition("?")
    if name == "digits":
        if query:
            raise DataError(f"builtin:digits takes no parameters, got {query!r}; use plain builtin:digits")
        return "digits", [], lambda w: _build_digits(w, store_size)
    if name == "shapes":
        params = _shapes_params(query)
        return "shapes", [params], lambda w: _build_shapes(w, params, store_size)
    raise DataError(f"unknown built-in dataset {name!r} in {src!r}; built-ins are builtin:digits and builtin:shapes")


def _shapes_params(query: str) -> dict[str, int]:
    """Parse ``classes=10&size=32...`` into validated integers over the defaults."""
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - SHAPES_DEFAULTS.keys())
    if unknown:
        raise DataError(f"unknown builtin:shapes parameter(s) {unknown}; valid keys: {', '.join(SHAPES_DEFAULTS)} "
                        f"(e.g. builtin:shapes?classes=10&size=32&train=5000&test=1000&seed=0)")
    params = dict(SHAPES_DEFAULTS)
    for key, value in pairs:
        lo, hi = SHAPES_LIMITS[key]
        try:
            params[key] = int(value)
        except ValueError:
            raise DataError(f"builtin:shapes parameter {key}={value!r} is not an integer; "
                            f"use {key}=<{lo}..{hi}>") from None
        if not lo <= params[key] <= hi:
            raise DataError(f"builtin:shapes parameter {key}={value} is out of range; use {lo} <= {key} <= {hi}")
    return params


def _build_digits(writer: StoreWriter, store_size: int | None) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    size = store_size or 32
    gray = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)  # values 0..16 -> 0..255
    up = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False)
    images = up.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).numpy()  # gray -> 3 channels
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    for split, idx in (("train", np.sort(train)), ("test", np.sort(test))):
        store_split(writer, split, images[idx], labels[idx], None)
    return {"classes": [str(d) for d in range(10)], "skipped": []}


def _build_shapes(writer: StoreWriter, params: dict[str, int], store_size: int | None) -> dict:
    size = params["size"]
    for split_id, split in enumerate(("train", "test")):
        n = params[split]
        if n == 0:
            continue
        rng = np.random.default_rng([params["seed"], split_id])  # independent train and test streams
        labels = rng.permutation(np.arange(n) % params["classes"]).astype(np.int64)  # balanced classes
        out = writer.allocate(split, n, store_size or size, store_size or size)
        chunk = max(1, (1 << 21) // size**2)  # ~2 M pixels a chunk keeps float32 temporaries near 10 MiB
        for start in range(0, n, chunk):
            out[start:start + chunk] = fit(render_shapes(labels[start:start + chunk], size, rng), store_size)
        writer.finish_split(split, out, labels)
    return {"classes": list(SHAPE_NAMES[:params["classes"]]), "skipped": []}


# ---- image folders ------------------------------------------------------------------------------

def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted (sub-folder names, image file names) of ``folder``; hidden entries and other files ignored."""
    dirs, images = [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or e.name == "__MACOSX":
                continue
            if e.is_dir():
                dirs.append(e.name)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(e.name)
    return sorted(dirs), sorted(images)


def walk_files(folder: Path, suffixes: tuple[str, ...] | None = IMAGE_EXTENSIONS) -> list[tuple[str, int, int]]:
    """(path, size in bytes, mtime in ns) of every file below ``folder`` whose lower-cased name ends in
    one of ``suffixes`` (None: every file), hidden ones left out, sorted by path."""
    found, stack = [], [folder]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    stack.append(e.path)
                elif suffixes is None or e.name.lower().endswith(suffixes):
                    st = e.stat()
                    found.append((e.path, st.st_size, st.st_mtime_ns))
    return sorted(found)


def _folder_layout(root: Path) -> tuple[dict[str, Path], bool]:
    """({split: folder of class folders}, labelled) for ROOT, or a DataError naming the mix found."""
    dirs, images = _entries(root)
    split_dirs = [d for d in dirs if d in ("train", "val", "test")]
    if split_dirs:
        others = [d + "/" for d in dirs if d not in split_dirs] + images
        if "train" not in split_dirs:
            raise DataError(f"{root} holds {split_dirs[0]}/ but no train/; add train/<class>/ folders. {LAYOUTS}")
        if others:
            raise DataError(f"{root} mixes layouts: split folders {[d + '/' for d in split_dirs]} next to "
                            f"{others[:5]}; move those into train/<class>/ or elsewhere. {LAYOUTS}")
        if "val" in split_dirs and "test" in split_dirs:
            raise DataError(f"{root} holds both val/ and test/; keep one of them as the test split. {LAYOUTS}")
        test = [root / d for d in ("val", "test") if d in split_dirs]
        return {"train": root / "train", **({"test": test[0]} if test else {})}, True
    if dirs and images:
        raise DataError(f"{root} mixes layouts: image files {images[:3]} lie loose next to class folders "
                        f"{dirs[:3]}; move them into a class folder. {LAYOUTS}")
    if not dirs and not images:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no class folders. {ACCEPTED}")
    return {"train": root}, bool(dirs)


def _list_split(folder: Path, labelled: bool) -> tuple[list[str], list[tuple[str, int, int]], np.ndarray]:
    """(class names, image files, labels) of one split folder."""
    if not labelled:
        files = walk_files(folder)
        return [], files, np.full(len(files), -1, np.int64)
    classes, images = _entries(folder)
    if images or not classes:
        raise DataError(f"{folder} must hold only class folders, found images {images[:3]} and folders "
                        f"{classes[:3]}; put every image into {folder}/<class>/. {LAYOUTS}")
    per_class = [walk_files(folder / c) for c in classes]
    empty = [str(folder / c) for c, files in zip(classes, per_class) if not files]
    if empty:
        raise DataError(f"empty class folder {empty[0]}" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                        + f": it holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(files) for files in per_class])
    return classes, [f for files in per_class for f in files], labels


def _resolve_folder(root: Path, store_size: int, progress: bool = True):
    listed, digest = list_folder(root)
    return "folder", [digest], lambda w: _build_folder(w, root, listed, store_size, progress)


# Listings kept for the block of reused_listings() (None outside one): {resolved root: list_folder's result}.
_LISTINGS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("vipr_folder_listings", default=None)


@contextlib.contextmanager
def reused_listings():
    """Within the block, each folder is listed once (a stat of every file: about 15 us a file, 20 s for
    1.3 M files) however many readers ask; the block assumes the folder does not change meanwhile."""
    token = _LISTINGS.set({})
    try:
        yield
    finally:
        _LISTINGS.reset(token)


def list_folder(root: Path) -> tuple[dict, str]:
    """({split: (class names, [(path, size, mtime)], labels)}, sha256 of the listing) of image folder ``root``.

    The listing defines the content: relative path, size and mtime of every file (the raw and the
    encoded store key their entries by it). Listed once per folder inside :func:`reused_listings`."""
    kept = _LISTINGS.get()
    if kept is None:
        return _list_folder(root)
    key = str(Path(root).resolve())
    if key not in kept:
        kept[key] = _list_folder(root)
    return kept[key]


def _list_folder(root: Path) -> tuple[dict, str]:
    layout, labelled = _folder_layout(root)
    listed = {split: _list_split(folder, labelled) for split, folder in layout.items()}
    if "test" in listed and listed["test"][0] != listed["train"][0]:
        train, test = set(listed["train"][0]), set(listed["test"][0])
        raise DataError(f"{layout['test']} classes differ from {layout['train']}: missing in test "
                        f"{sorted(train - test)[:5]}, extra in test {sorted(test - train)[:5]}; "
                        f"give both splits the same class folders")
    h = hashlib.sha256()
    for split, (classes, files, _) in listed.items():
        h.update(json.dumps([split, classes]).encode())
        for path, size, mtime in files:
            h.update(f"{os.path.relpath(path, root)}\0{size}\0{mtime}\n".encode())
    return listed, h.hexdigest()


def stored_file_names(dataset: Dataset) -> dict[str, list[str]] | None:
    """Each split's image files of an image-folder source, relative to its root (POSIX), one per stored row.

    The store keeps no file names: the folder is listed again, in the order it was decoded, less the
    files that could not be. None for the array sources (built-ins, CIFAR, .npz), whose rows are their ids.
    """
    source = dataset.source or dataset.name
    root = Path(source).expanduser()
    if source.startswith("builtin:") or not root.is_dir() or find_cifar(root):
        return None
    layout, labelled = _folder_layout(root)
    skipped = {path for path, _ in dataset.skipped}
    names = {}
    for split, folder in layout.items():
        listed = (Path(os.path.relpath(f[0], root)).as_posix() for f in _list_split(folder, labelled)[1])
        names[split] = [name for name in listed if name not in skipped]
        stored = getattr(dataset, split)
        if stored is None or len(names[split]) != len(stored):
            raise DataError(f"{root} changed while it was read ({split}: {len(names[split])} files listed, "
                            f"{0 if stored is None else len(stored)} decoded); run the command again")
    return names


def _build_folder(writer: StoreWriter, root: Path, listed: dict, size: int, progress: bool = True) -> dict:
    skipped: list[tuple[str, str]] = []
    for split, (_, files, labels) in listed.items():
        out = writer.allocate(split, len(files), size, size)
        keep, failures = _decode_into(out, [f[0] for f in files], size, split, progress)
        skipped += [(Path(os.path.relpath(path, root)).as_posix(), reason) for path, reason in failures]
        if not keep.any():
            raise DataError(f"no image in {root} ({split}) could be decoded; first failure: {failures[0]}")
        writer.finish_split(split, out, labels[keep])
    return {"classes": listed["train"][0], "skipped": skipped}


def _decode_into(out: np.ndarray, paths: list[str], size: int, split: str, progress: bool = True):
    """Decode ``paths`` in parallel into consecutive rows of ``out``; (decoded mask, [(path, reason)])."""
    keep, failures, filled = np.zeros(len(paths), bool), [], 0
    with ThreadPoolExecutor(DECODE_WORKERS) as pool, side_bar(total=len(paths), desc=f"decoding {split}",
                                                              unit="img", leave=False, enabled=progress) as bar:
        for start in range(0, len(paths), 256):  # bounded window: no million pending futures
            chunk = paths[start:start + 256]
            for i, result in enumerate(pool.map(_decode_image, chunk, repeat(size)), start):
                if isinstance(result, str):
                    failures.append((paths[i], result))
                else:
                    out[filled], keep[i], filled = result, True, filled + 1
            bar.update(len(chunk))
    return keep, failures


def _decode_image(path: str, size: int) -> np.ndarray | str:
    """uint8 (3, size, size) of the centred square of ``path``, or the reason it cannot be read."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size (much faster)
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=box)  # crop + resize in one pass
            return np.asarray(im).transpose(2, 0, 1)
    except Exception as e:  # noqa: BLE001 -- any decoder failure means "skip this file", never a crash
        return f"{type(e).__name__}: {e}"

