"""Semantic segmentation folder pair (``masks:ROOT``): ``images/<split>/`` beside ``masks/<split>/``.

A mask is a single-channel (or palette) PNG of class indices with the image's stem and size;
255 = ignore. The test split is ``val/`` (or ``test/``). Classes come from ``ROOT/classes.txt``
(one name a line, index 0 first) or are named by their index, up to the largest value found.
An image without a mask, or with an unusable one, is skipped and listed in skipped.txt.
"""

from __future__ import annotations

from pathlib import Path


from vipr.data.dense.canvas import (auto_canvas, decode_canvas, ordered_map, peek_size, place_label_map,
                                    read_label_map)
from vipr.data.dense.types import IGNORE
from vipr.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def build_segfolder(writer, root: Path) -> None:
    """Decode ``images/`` and ``masks/`` of every split into a DenseWriter."""
    skipped = []
    splits = {"train": "train", "test": next((d for d in ("val", "test") if (root / "images" / d).is_dir()), None)}
    classes = _listed_classes(root)
    highest = 0
    listed = {split: _pairs(root, folder) for split, folder in splits.items() if folder is not None}
    images = [image for pairs, _ in listed.values() for image, _ in pairs]
    writer.canvas = writer.canvas or auto_canvas(s for s in ordered_map(peek_size, images) if s)
    for split, (pairs, missing) in listed.items():
        folder = splits[split]
        skipped += [(split, f"images/{folder}/{name}", "image", reason) for name, reason in missing]
        builder = writer.split(split, len(pairs), semantic=True, masks=False)
        decoded = ordered_map(lambda pair: _decode(*pair, writer.canvas, classes), pairs)
        for index, ((image_path, _), result) in enumerate(zip(pairs, decoded)):
            name = Path(image_path).relative_to(root).as_posix()
            if isinstance(result, str):
                skipped.append((split, name, "image", result))
                continue
            image, valid, orig, label_map = result
            highest = max(highest, int(label_map[label_map != IGNORE].max(initial=0)))
            builder.add(image, valid, orig, index, name, {}, label_map)
        writer.finish(builder)
    names = classes or [str(k) for k in range(highest + 1)]
    writer.commit_dense(kind="masks", classes=names, category_ids=list(range(len(names))), skipped=skipped)


def _listed_classes(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 1 <= len(names) <= 255 or len(set(names)) != len(names):
        raise DataError(f"{path} must list 1..255 distinct class names, one a line, index 0 first")
    return names


def _pairs(root: Path, folder: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """([(image, mask)] matched by stem, [(image name, reason)] for images without a mask)."""
    images_dir, masks_dir = root / "images" / folder, root / "masks" / folder
    if not masks_dir.is_dir():
        raise DataError(f"{root}: images/{folder}/ has no masks/{folder}/ beside it; put the label maps there")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    images = sorted(p for p in images_dir.iterdir()
                    if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not images:
        raise DataError(f"{images_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    pairs = [(str(p), str(masks[p.stem])) for p in images if p.stem in masks]
    missing = [(p.name, f"no masks/{folder}/{p.stem}.png") for p in images if p.stem not in masks]
    return pairs, missing


def _decode(image_path: str, mask_path: str, canvas: int, classes: list[str] | None):
    decoded = decode_canvas(image_path, canvas)
    if isinstance(decoded, str):
        return decoded
    image, valid, orig = decoded
    values = read_label_map(mask_path, orig, None if classes is None else len(classes), "mask")
    if isinstance(values, str):
        return values
    return image, valid, orig, place_label_map(values, valid, canvas, IGNORE)
