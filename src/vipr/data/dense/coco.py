"""COCO instances (``coco:ROOT``): read and check the JSON, then decode images, boxes and masks.

Bad records never crash the build: an annotation whose image is missing (from the JSON or from
disk), whose category id is unknown, whose id repeats an earlier one, whose box has zero area or
lies entirely outside its image (a box partly outside is clipped), or whose segmentation cannot
be read is skipped and listed with its id in skipped.txt. A file that cannot be used at all
(malformed JSON, a missing or mistyped top-level field, a bad category list) is a DataError
naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from vipr.data.dense.canvas import auto_canvas, clip_box, decode_canvas, ordered_map, place_label_map
from vipr.data.dense.rle import encode, polygons_to_mask
from vipr.data.dense.types import IGNORE
from vipr.errors import DataError

SPLIT_WORDS = {"train": "train", "test": "val"}


def find_coco(root: Path) -> dict[str, Path]:
    """{"train": instances_train*.json, "test": instances_val*.json (if any)} under ROOT/annotations."""
    folder = root / "annotations"
    found = {}
    for split, word in SPLIT_WORDS.items():
        files = sorted(folder.glob(f"instances_{word}*.json"))
        if len(files) > 1:
            raise DataError(f"{folder} holds several {word} files {[f.name for f in files]}; "
                            f"keep one instances_{word}*.json there")
        if files:
            found[split] = files[0]
    if "train" not in found:
        raise DataError(f"{folder} holds no instances_train*.json; a coco:ROOT needs "
                        f"ROOT/annotations/instances_train<name>.json (and optionally instances_val<name>.json)")
    return found


def build_coco(writer, root: Path, files: dict[str, Path]) -> None:
    """Decode every split of a COCO root into a DenseWriter."""
    skipped, clipped = [], 0
    parsed = {split: read_instances(path, root, split, skipped) for split, path in files.items()}
    categories = parsed["train"]["categories"]  # {id: name}; the train file defines the classes
    ids = sorted(categories)
    label_of = {cid: k + 1 for k, cid in enumerate(ids)}  # contiguous 1..K, 0 is the background
    sizes = [(r["height"], r["width"]) for data in parsed.values() for r in data["images"]]
    writer.canvas = writer.canvas or auto_canvas(sizes)  # store_size unset: from the JSON's image sizes
    masks = any(isinstance(a, dict) and a.get("segmentation") for a in parsed["train"]["annotations"])
    for split, data in parsed.items():
        name = files[split].relative_to(root).as_posix()
        per_image = _check_annotations(data, label_of, split, name, skipped)
        folders = _image_folders(root, files[split])
        builder = writer.split(split, len(data["images"]), semantic=masks, masks=masks)
        jobs = [(record, per_image.get(record["id"], []), folders, writer.canvas, masks) for record in data["images"]]
        for (record, anns, *_), result in zip(jobs, ordered_map(_decode, jobs)):
            if isinstance(result, str):
                skipped.append((split, record["file_name"], f"image {record['id']}", result))
                why = f"its image {record['id']} was skipped: {result}"
                skipped += [(split, name, f"annotation {a['id']}", why) for a in anns]
                continue
            image, valid, orig, ann, semantic, problems, n_clipped = result
            skipped += [(split, name, f"annotation {aid}", reason) for aid, reason in problems]
            clipped += n_clipped
            builder.add(image, valid, orig, record["id"], record["file_name"], ann, semantic)
        writer.finish(builder)
    writer.commit_dense(kind="coco", classes=["background", *(categories[c] for c in ids)],
                        category_ids=[0, *ids], skipped=skipped, clipped=clipped)


def read_instances(path: Path, root: Path, split: str, skipped: list) -> dict:
    """The JSON's images (checked, duplicates dropped), raw annotations and categories {id: name}."""
    name = path.relative_to(root).as_posix()
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                        f"fix or re-export the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} as JSON text ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object with images, annotations and categories, "
                        f"got {type(data).__name__}")
    for field in ("images", "annotations", "categories"):
        if not isinstance(data.get(field), list):
            got = "missing" if field not in data else f"a {type(data[field]).__name__}"
            raise DataError(f"{path}: field '{field}' must be a list, is {got}; a COCO instances file holds "
                            f"'images', 'annotations' and 'categories' lists")
    return {"images": _check_images(data["images"], split, name, skipped),
            "annotations": data["annotations"], "categories": _check_categories(data["categories"], path)}


def _check_categories(categories: list, path: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    for k, cat in enumerate(categories):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not _is_int(cid) or cid < 0:
            raise DataError(f"{path}: field 'categories[{k}].id' must be a non-negative integer, got {cid!r}")
        if not isinstance(cat.get("name"), str):
            raise DataError(f"{path}: field 'categories[{k}].name' must be a string, got {cat.get('name')!r}")
        if cid in found:
            raise DataError(f"{path}: field 'categories[{k}].id' repeats category id {cid} "
                            f"({found[cid]!r} and {cat['name']!r}); give every category its own id")
        found[cid] = cat["name"]
    if not found:
        raise DataError(f"{path}: field 'categories' is empty; list the object classes there")
    return found


def _check_images(images: list, split: str, name: str, skipped: list) -> list[dict]:
    kept, seen = [], set()
    for k, record in enumerate(images):
        rid = record.get("id") if isinstance(record, dict) else None
        where = f"image {rid}" if _is_int(rid) else f"images[{k}]"
        problem = None if _is_int(rid) else f"no integer 'id' (got {rid!r})"
        if problem is None:
            if not isinstance(record.get("file_name"), str) or not record["file_name"]:
                problem = f"no 'file_name' string (got {record.get('file_name')!r})"
            elif not all(_is_int(record.get(f)) and record[f] > 0 for f in ("width", "height")):
                problem = (f"width/height must be positive integers "
                           f"(got {record.get('width')!r}, {record.get('height')!r})")
            elif rid in seen:
                problem = f"duplicate image id {rid}; the first record with it is kept"
        if problem:
            skipped.append((split, name, where, problem))
            continue
        seen.add(rid)
        kept.append(record)
    return kept


def _check_annotations(data: dict, label_of: dict, split: str, name: str, skipped: list) -> dict[int, list]:
    """{image id: [annotation with 'label' and a source-pixel 'xyxy']}; every other one is skipped."""
    sizes = {r["id"]: (r["height"], r["width"]) for r in data["images"]}
    per_image: dict[int, list] = {}
    seen = set()
    for k, ann in enumerate(data["annotations"]):
        aid = ann.get("id") if isinstance(ann, dict) else None
        problem = _annotation_problem(ann, aid, seen, sizes, label_of)
        if problem:
            skipped.append((split, name, f"annotation {aid}" if _is_int(aid) else f"annotations[{k}]", problem))
            continue
        seen.add(aid)
        x, y, w, h = (float(v) for v in ann["bbox"])
        per_image.setdefault(ann["image_id"], []).append(
            {**ann, "label": label_of[ann["category_id"]], "xyxy": (x, y, x + w, y + h)})
    return per_image


def _annotation_problem(ann, aid, seen: set, sizes: dict, label_of: dict) -> str | None:
    if not _is_int(aid):
        return f"no integer 'id' (got {aid!r})"
    if aid in seen:
        return f"duplicate annotation id {aid}; the first one is kept"
    if ann.get("image_id") not in sizes:
        return f"image_id {ann.get('image_id')!r} is not among the usable images"
    if ann.get("category_id") not in label_of:
        return f"unknown category_id {ann.get('category_id')!r}; categories are {sorted(label_of)[:10]}"
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        return f"bbox must be [x, y, width, height], got {box!r}"
    if not all(math.isfinite(v) for v in box):
        return f"bbox {box} has a non-finite value"
    if box[2] <= 0 or box[3] <= 0:
        return f"zero-area bbox {box} (width and height must be > 0)"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"
    return None


def _decode(job):
    """Decode one image and its annotations onto the canvas, or the reason the image is skipped."""
    record, anns, folders, canvas, masks = job
    path = next((folder / record["file_name"] for folder in folders if (folder / record["file_name"]).is_file()), None)
    if path is None:
        return f"file {record['file_name']} not found under {', '.join(str(f) for f in folders)}"
    decoded = decode_canvas(str(path), canvas)
    if isinstance(decoded, str):
        return decoded
    image, (h, w), orig = decoded
    if orig != (record["height"], record["width"]):
        return f"the file is {orig[1]}x{orig[0]} pixels, the JSON says {record['width']}x{record['height']}"
    sx, sy = w / orig[1], h / orig[0]
    out = {"boxes": [], "labels": [], "iscrowd": [], "difficult": [], "ann_ids": [], "masks": []}
    problems, n_clipped = [], 0
    for ann in anns:
        clip = clip_box(ann["xyxy"], *orig)
        mask = _mask(ann, orig, (h, w), sx, sy, canvas) if masks and not isinstance(clip, str) else None
        problem = clip if isinstance(clip, str) else mask if isinstance(mask, str) else None
        if problem:
            problems.append((ann["id"], problem))
            continue
        (x0, y0, x1, y1), was_clipped = clip
        n_clipped += was_clipped
        for key, value in (("boxes", (x0 * sx, y0 * sy, x1 * sx, y1 * sy)), ("labels", ann["label"]),
                           ("iscrowd", ann.get("iscrowd", 0)), ("difficult", 0), ("ann_ids", ann["id"]),
                           ("masks", mask)):
            out[key].append(value)
    semantic = _semantic(out, (h, w), canvas) if masks else None
    if masks:
        out["rles"] = encode(np.array(out["masks"], np.uint8).reshape(-1, canvas, canvas))
    out.pop("masks")
    return image, (h, w), orig, out, semantic, problems, n_clipped


def _mask(ann: dict, orig: tuple[int, int], valid: tuple[int, int], sx: float, sy: float, canvas: int):
    """uint8 (canvas, canvas) mask of a polygon or RLE segmentation, or why it cannot be read."""
    seg, (height, width) = ann.get("segmentation"), orig
    try:
        if isinstance(seg, list) and seg:
            if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                       and all(isinstance(v, (int, float)) for v in p) for p in seg):
                return "segmentation polygons must be lists of >= 3 x, y pairs (6+ numbers)"
            return polygons_to_mask(seg, sx, sy, canvas)
        if isinstance(seg, dict) and "counts" in seg:
            if list(seg.get("size", [])) != [height, width]:
                return f"RLE size {seg.get('size')!r} differs from the image's [{height}, {width}]"
            counts = seg["counts"]
            rle = mask_utils.frPyObjects(seg, height, width) if isinstance(counts, list) else \
                {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
            full = mask_utils.decode(rle)
            return place_label_map(full, valid, canvas, 0)
    except Exception as e:  # noqa: BLE001 -- pycocotools raises bare exceptions on malformed input
        return f"unreadable segmentation ({type(e).__name__}: {e})"
    return "no segmentation (the file has masks for other annotations)"


def _semantic(out: dict, valid: tuple[int, int], canvas: int) -> np.ndarray:
    """Class index per pixel from the instance masks: crowds ignored, smaller objects painted over larger."""
    semantic = np.full((canvas, canvas), IGNORE, np.uint8)
    semantic[:valid[0], :valid[1]] = 0
    order = sorted(range(len(out["masks"])), key=lambda k: (not out["iscrowd"][k], -int(out["masks"][k].sum())))
    for k in order:
        semantic[out["masks"][k].astype(bool)] = IGNORE if out["iscrowd"][k] else out["labels"][k]
    return semantic


def _image_folders(root: Path, json_file: Path) -> list[Path]:
    """Where the images of an instances_<name>.json may lie: ROOT/<name>/, ROOT/images/<name>/,
    other ROOT/<train|val>*/ folders, then ROOT itself (file_name relative to ROOT)."""
    stem = json_file.stem[len("instances_"):]
    word = "train" if stem.startswith("train") else "val"
    others = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith(word) and d.name != stem)
    return [root / stem, root / "images" / stem, *others, root]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
