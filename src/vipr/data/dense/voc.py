"""Pascal VOC (``voc:ROOT?train=train&test=val``): XML boxes, JPEG images, palette-PNG label maps.

Layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<list>.txt`` (or
``ImageSets/Segmentation/<list>.txt``) and, for semantic segmentation, ``SegmentationClass/<id>.png``
(palette indices: 0 background, 1..20 the classes in VOC order, 255 the object borders = ignore).
Boxes are VOC's 1-based inclusive pixel indices, turned into edges as detectron2 does
(``x0 = xmin - 1``, ``x1 = xmax``). Classes: ``ROOT/classes.txt`` (one object class a line) if
present, else the 20 VOC classes, followed by any other name found in the XML (sorted).
XML is parsed with defusedxml: annotation files from others cannot expand entities.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

from vipr.data.dense.canvas import (auto_canvas, clip_box, decode_canvas, ordered_map, peek_size, place_label_map,
                                    read_label_map)
from vipr.data.dense.types import IGNORE
from vipr.errors import DataError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOC_DEFAULTS = {"train": "train", "test": "val"}  # image lists under ImageSets/Main (VOC07 protocol: trainval/test)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG")  # VOC ships .jpg; VOC-format exports vary


def build_voc(writer, root: Path, lists: dict[str, str]) -> None:
    """Decode the listed splits of a VOC root into a DenseWriter."""
    skipped, clipped = [], 0
    ids = {split: _read_list(root, split, name, explicit=lists != VOC_DEFAULTS)
           for split, name in lists.items()}
    parsed = {split: list(ordered_map(lambda i: _read_xml(root, i), names)) for split, names in ids.items() if names}
    classes = _classes(root, [p for split in parsed.values() for p in split if not isinstance(p, str)])
    label_of = {name: k + 1 for k, name in enumerate(classes)}
    files = [_image_file(root, i) for names in ids.values() for i in names]
    writer.canvas = writer.canvas or auto_canvas(s for s in ordered_map(lambda f: peek_size(str(root / f)), files) if s)
    semantic = (root / "SegmentationClass").is_dir() and any((root / "SegmentationClass").glob("*.png"))
    for split, objects in parsed.items():
        builder = writer.split(split, len(objects), semantic=semantic, masks=False)
        jobs = [(root, image_id, objs, label_of, writer.canvas, semantic)
                for image_id, objs in zip(ids[split], objects)]
        for index, ((_, image_id, *_), result) in enumerate(zip(jobs, ordered_map(_decode, jobs))):
            if isinstance(result[0], str):  # (file, reason): the image is skipped
                skipped.append((split, result[0], f"image {image_id}", result[1]))
                continue
            image, valid, orig, ann, label_map, problems, n_clipped, image_file = result
            skipped += [(split, file, item, reason) for file, item, reason in problems]
            clipped += n_clipped
            builder.add(image, valid, orig, index, image_file, ann, label_map)
        writer.finish(builder)
    writer.commit_dense(kind="voc", classes=["background", *classes], category_ids=list(range(len(classes) + 1)),
                        skipped=skipped, clipped=clipped)


def _read_list(root: Path, split: str, name: str, explicit: bool) -> list[str]:
    candidates = [root / "ImageSets" / folder / f"{name}.txt" for folder in ("Main", "Segmentation")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None and split == "test" and name == "val" and (root / "ImageSets/Main/test.txt").is_file():
        path = root / "ImageSets/Main/test.txt"  # VOC2007 test: no val list, a test list
    if path is None:
        if split == "test" and not explicit:
            return []  # no held-out list: train only
        raise DataError(f"{root}: no image list {candidates[0]} (nor {candidates[1].relative_to(root)}) for the "
                        f"{split} split; write one image id a line there, or choose another list with "
                        f"voc:ROOT?{split}=<name of a .txt in ImageSets/Main>")
    try:
        return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the image list {path} ({e})") from None


def _read_xml(root: Path, image_id: str) -> list[dict] | str | None:
    """The objects of ``Annotations/<id>.xml`` ([{name, difficult, box or problem}]), a reason, or None if absent."""
    path = root / "Annotations" / f"{image_id}.xml"
    if not path.is_file():
        return None
    try:
        tree = parse_xml(path)
    except ParseError as e:
        return f"malformed XML ({e})"
    except (DefusedXmlException, OSError, UnicodeDecodeError) as e:
        return f"unreadable XML ({type(e).__name__}: {e})"
    objects = []
    for k, obj in enumerate(tree.getroot().iter("object")):
        name = (obj.findtext("name") or "").strip()
        entry = {"index": k, "name": name, "difficult": (obj.findtext("difficult") or "0").strip() == "1"}
        try:
            box = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
            entry["xyxy"] = (xmin - 1, ymin - 1, xmax, ymax)  # 1-based inclusive indices -> pixel edges
        except (AttributeError, TypeError, ValueError):
            entry["problem"] = "no numeric bndbox xmin, ymin, xmax, ymax"
        if not name:
            entry["problem"] = "no <name>"
        objects.append(entry)
    return objects


def _classes(root: Path, parsed: list[list[dict]]) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names or len(set(names)) != len(names):
            raise DataError(f"{listed} must list distinct object class names, one a line (background excluded)")
        return names
    found = {o["name"] for objs in parsed if objs for o in objs if o["name"]}
    return [*VOC_CLASSES, *sorted(found - set(VOC_CLASSES))]


def _decode(job):
    """(canvas, valid, orig, annotations, label map, problems, clipped, image file) or (file, reason) to skip it."""
    root, image_id, objects, label_of, canvas, semantic = job
    xml, png = f"Annotations/{image_id}.xml", root / "SegmentationClass" / f"{image_id}.png"
    if isinstance(objects, str):
        return xml, objects
    if objects is None and not (semantic and png.is_file()):
        return xml, f"no {xml} (and no SegmentationClass/{image_id}.png)"
    image_file = _image_file(root, image_id)
    decoded = decode_canvas(str(root / image_file), canvas)
    if isinstance(decoded, str):
        return image_file, decoded
    image, (h, w), orig = decoded
    sx, sy = w / orig[1], h / orig[0]
    ann = {"boxes": [], "labels": [], "iscrowd": [], "difficult": [], "ann_ids": []}
    problems, n_clipped = [], 0
    for obj in objects or []:
        clip = obj.get("problem") or (f"unknown class name {obj['name']!r}" if obj["name"] not in label_of
                                      else clip_box(obj["xyxy"], *orig))
        if isinstance(clip, str):
            problems.append((xml, f"{image_id} object {obj['index']}", clip))
            continue
        (x0, y0, x1, y1), was_clipped = clip
        n_clipped += was_clipped
        for key, value in (("boxes", (x0 * sx, y0 * sy, x1 * sx, y1 * sy)), ("labels", label_of[obj["name"]]),
                           ("iscrowd", 0), ("difficult", obj["difficult"]), ("ann_ids", obj["index"])):
            ann[key].append(value)
    label_map = None
    if semantic and png.is_file():
        label_map = _label_map(png, orig, (h, w), canvas, len(label_of) + 1)
        if isinstance(label_map, str):
            problems.append((f"SegmentationClass/{image_id}.png", f"{image_id} label map", label_map))
            label_map = None
    return image, (h, w), orig, ann, label_map, problems, n_clipped, image_file


def _image_file(root: Path, image_id: str) -> str:
    """JPEGImages/<id> with the first extension that exists (.jpg when none does)."""
    return next((f"JPEGImages/{image_id}{ext}" for ext in IMAGE_EXTENSIONS
                 if (root / "JPEGImages" / f"{image_id}{ext}").is_file()), f"JPEGImages/{image_id}.jpg")


def _label_map(path: Path, orig: tuple[int, int], valid: tuple[int, int], canvas: int, num_classes: int):
    """uint8 (canvas, canvas) class indices of a palette / single-channel PNG, or why it is unusable."""
    values = read_label_map(path, orig, num_classes)
    if isinstance(values, str):
        return values
    return place_label_map(values, valid, canvas, IGNORE)
