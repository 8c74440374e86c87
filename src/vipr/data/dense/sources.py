"""Open a detection / segmentation source by its SRC string, decoded once into the dense store.

SRC forms:

* ``builtin:scenes?size=128&train=200&test=50&classes=6&objects=4&seed=0`` -- procedural scenes
  (vipr.data.dense.scenes): boxes, instance masks and semantic maps.
* ``coco:ROOT`` -- COCO instances: ``ROOT/annotations/instances_train*.json`` (and ``instances_val*``,
  the test split), images in ``ROOT/<name after instances_>/`` (``train2017/``), another
  ``ROOT/train*/`` or ``ROOT/val*/`` folder, or at ``file_name`` relative to ROOT.
* ``voc:ROOT?train=train&test=val`` -- Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/``,
  ``ImageSets/Main/<list>.txt`` (or ``ImageSets/Segmentation``), ``SegmentationClass/*.png``.
* ``masks:ROOT`` -- semantic segmentation: ``ROOT/images/{train,val}/`` and ``ROOT/masks/{train,val}/``
  (single-channel PNG label maps of the same stem; 255 = ignore; ``ROOT/classes.txt`` optional).
* a plain ROOT of one of these three layouts is recognised by its folders.
* ``NAME:V2`` -- a dense version recorded by ``vipr data register`` (vipr.data.versions).

``store_size`` is the canvas side S in pixels. Unset: the longest image side of the source, at most
256 (vipr.data.dense.canvas.auto_canvas); for scenes, their ``size``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qsl

from vipr.data.dense.scenes import SCENES_DEFAULTS, SCENES_LIMITS, build_scenes
from vipr.data.dense.store import load_or_build_dense
from vipr.data.dense.types import DenseDataset
from vipr.data.sources import walk_files
from vipr.data.store import source_key
from vipr.data.versions import open_version, registered
from vipr.errors import DataError
from vipr.fsutil import cache_root

DENSE_VERSION = 1  # part of every cache key: bump when decoding or generation changes its output
PREFIXES = ("coco:", "voc:", "masks:")
ACCEPTED = ("accepted detection / segmentation sources: builtin:scenes[?size=128&train=200&test=50&classes=6"
            "&objects=4&seed=0]; coco:ROOT (ROOT/annotations/instances_train*.json); voc:ROOT (Annotations/, "
            "JPEGImages/, ImageSets/Main/); masks:ROOT (ROOT/images/train/ and ROOT/masks/train/)")


def is_dense_source(src: str) -> bool:
    """Whether ``src`` names a detection / segmentation source (a prefix, builtin:scenes, or a known layout)."""
    src = str(src)
    if src.startswith(PREFIXES) or src.split("?")[0] == "builtin:scenes":
        return True
    version = registered(src)  # NAME:V2: the kind it was registered as
    if version is not None:
        return version.kind == "dense"
    path = Path(src).expanduser()
    return not src.startswith("builtin:") and path.is_dir() and detect_layout(path) is not None


def detect_layout(root: Path) -> str | None:
    """coco, voc or masks when ROOT's folders have that layout, else None."""
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "Annotations").is_dir() or ((root / "JPEGImages").is_dir() and (root / "ImageSets").is_dir()):
        return "voc"
    if (root / "images" / "train").is_dir() and (root / "masks" / "train").is_dir():
        return "masks"
    return None


def open_dense(src: str, *, store_size: int | None = None,
               cache_dir: str | os.PathLike | None = None) -> DenseDataset:
    """Open ``src`` (see the module docstring), decoding it into the cache on first use.

    Examples:
        >>> ds = open_dense("builtin:scenes?train=8&test=0&size=64")
        >>> sample = ds.train[0]
        >>> sample.image.shape, sample.boxes.shape[1], sample.masks.shape[1:]
        (torch.Size([3, 64, 64]), 4, torch.Size([64, 64]))
    """
    if store_size is not None and (not isinstance(store_size, int) or not 16 <= store_size <= 4096):
        raise DataError(f"store_size must be an integer number of pixels in 16..4096, got {store_size!r}")
    version = registered(str(src))  # NAME:V2 of `vipr data register`: its recorded source, digest checked
    if version is not None:
        return open_version(version, "dense", open_dense, store_size, cache_dir=cache_dir)
    kind, parts, canvas, build = _resolve(str(src), store_size)
    key = source_key(f"dense-{kind}", DENSE_VERSION, canvas or "auto", *parts)
    return load_or_build_dense(cache_root(cache_dir), key, str(src), canvas, build)


def _resolve(src: str, store_size: int | None):
    """(kind, parts that define the content, canvas side, build function) for a SRC string."""
    name, _, query = src.partition("?")
    if name == "builtin:scenes":
        params = int_params("builtin:scenes", query, SCENES_DEFAULTS, SCENES_LIMITS)
        params["size"] = store_size or params["size"]
        return "scenes", [params], params["size"], lambda w: build_scenes(w, params)
    kind, _, path = name.partition(":") if name.startswith(PREFIXES) else ("", "", name)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data source {src!r}: {root} is not a folder; fix the path. {ACCEPTED}")
    kind = kind or detect_layout(root)
    if kind is None:
        raise DataError(f"{root} has no detection / segmentation layout. {ACCEPTED}")
    canvas = store_size  # None: chosen from the image sizes while building
    if kind == "coco":
        from vipr.data.dense.coco import build_coco, find_coco

        if query:
            raise DataError(f"coco:ROOT takes no parameters, got {query!r}")
        files = find_coco(root)
        return "coco", [listing(root)], canvas, lambda w: build_coco(w, root, files)
    if kind == "voc":
        from vipr.data.dense.voc import VOC_DEFAULTS, build_voc

        lists = str_params("voc:ROOT", query, VOC_DEFAULTS)
        return "voc", [listing(root), lists], canvas, lambda w: build_voc(w, root, lists)
    from vipr.data.dense.segfolder import build_segfolder

    if query:
        raise DataError(f"masks:ROOT takes no parameters, got {query!r}")
    return "masks", [listing(root)], canvas, lambda w: build_segfolder(w, root)


def listing(root: Path) -> str:
    """sha256 of every file below ROOT (relative path, size, mtime): what defines the content."""
    h = hashlib.sha256()
    lines = (f"{os.path.relpath(path, root)}\0{size}\0{mtime}\n" for path, size, mtime in walk_files(root, None))
    for line in sorted(lines):
        h.update(line.encode())
    return h.hexdigest()


def int_params(name: str, query: str, defaults: dict[str, int], limits: dict[str, tuple[int, int]]) -> dict:
    """Parse ``key=value&...`` into validated integers over ``defaults``."""
    params = dict(defaults)
    for key, value in str_params(name, query, {k: str(v) for k, v in defaults.items()}, typed=False).items():
        lo, hi = limits[key]
        try:
            params[key] = int(value)
        except ValueError:
            raise DataError(f"{name} parameter {key}={value!r} is not an integer; use {key}=<{lo}..{hi}>") from None
        if not lo <= params[key] <= hi:
            raise DataError(f"{name} parameter {key}={value} is out of range; use {lo} <= {key} <= {hi}")
    return params


def str_params(name: str, query: str, defaults: dict[str, str], typed: bool = True) -> dict[str, str]:
    """Parse ``key=value&...``; unknown keys are an error naming the valid ones."""
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - defaults.keys())
    if unknown:
        example = "&".join(f"{k}={v}" for k, v in defaults.items())
        raise DataError(f"unknown {name} parameter(s) {unknown}; valid keys: {', '.join(defaults)} "
                        f"(e.g. {name}?{example})")
    return {**(defaults if typed else {}), **dict(pairs)}
