"""``vipr data register|list|show``: dataset versions (V1, V2, ...) in the metadata database."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Annotated

from vipr.cli.parser import add_json_flag
from vipr.config import SIDE_PX

REGISTER_HELP = """Record SRC's decoded content as an immutable version of NAME (V1, V2, ...), keyed by the
store's content digest: registering unchanged data returns the version it already is; changed data
(files added, edited or removed) becomes the next version. The version keeps the source as given
and resolved to an absolute path, the store size, classes, counts per split and skipped files.

Then `--data NAME:V2` (or NAME:2, NAME:latest, bare NAME) works wherever --data does: it opens the
recorded source and checks that it still holds the registered content.

  vipr data register ./photos --name photos --description "first export"
  vipr pretrain --data photos:V1 --epochs 10 --out runs/photos-moco"""


@dataclass(frozen=True)
class RegisterOptions:
    store_size: Annotated[int | None, SIDE_PX] = None  # px; None: the source's default


def add_parsers(data_sub) -> None:
    reg = data_sub.add_parser("register", help="record a source's content as a new dataset version (V1, V2, ...)",
                              description=REGISTER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    reg.add_argument("src", metavar="SRC", help="any data source --data takes (image folder, .npz, builtin:..., coco:...)")
    reg.add_argument("--name", required=True, help="dataset name (letters, digits, '.', '_', '-')")
    reg.add_argument("--description", default="", help="a note kept with the version")
    reg.add_argument("--store-size", type=int, metavar="PX",
                     help="side in px the images are decoded to (default: the source's; image folders 64)")
    reg.add_argument("--no-progress", action="store_true", help="no decoding bar (off a terminal: none anyway)")
    lst = data_sub.add_parser("list", help="registered datasets: versions, latest digest, source")
    show = data_sub.add_parser("show", help="one dataset version: source, digest, classes, counts, artifacts",
                               description="Show NAME's latest version, or NAME:V2 (NAME:2, NAME:latest).")
    show.add_argument("ref", metavar="NAME[:VERSION]")
    for parser, fn in ((reg, run_register), (lst, run_list), (show, run_show)):
        add_json_flag(parser)
        parser.set_defaults(run=fn)


def run_register(args) -> int:
    from vipr.cli.options import read_options
    from vipr.platform.dataset_register import register

    options = read_options(RegisterOptions, args)  # a bad --store-size before the data is decoded
    version, created = register(args.src, args.name, args.description, options.store_size, not args.no_progress)
    if args.json:
        print(json.dumps({**version.to_dict(), "created_now": created}))
        return 0
    what = "registered" if created else "unchanged: already registered as"
    print(f"{what} {version.ref} (digest {version.digest}, {_images(version)}) from {version.resolved}")
    return 0


def run_list(args) -> int:
    from vipr.platform import datasets

    latest = {}
    for version in datasets.all_versions():
        latest[version.name] = version  # by name then version: the last one is the latest
    rows = [{"name": v.name, "versions": v.version, "latest": v.ref, "kind": v.kind, "digest": v.digest,
             "images": _total(v), "source": v.resolved, "created": datasets.iso(v.created)} for v in latest.values()]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no registered datasets in {datasets.where()}; register one: vipr data register SRC --name NAME")
    else:
        _print_table(("NAME", "LATEST", "KIND", "DIGEST", "IMAGES", "CREATED", "SOURCE"),
                     [(r["name"], r["latest"], r["kind"], r["digest"], f"{r['images']:,}", r["created"], r["source"])
                      for r in rows])
    return 0


def run_show(args) -> int:
    from vipr.platform import dataset_refs, datasets

    version = dataset_refs.get(args.ref)
    record = {**version.to_dict(), "versions": [f"V{v.version}" for v in datasets.versions(version.name)],
              "artifacts": datasets.artifacts(version)}
    if args.json:
        print(json.dumps(record))
        return 0
    print(version.ref + (f"  {version.description}" if version.description else ""))
    skipped = f"{version.skipped}" + (f" (list: {version.skipped_file})" if version.skipped_file else "")
    fields = {"kind": version.kind, "digest": version.digest, "source": version.source,
              "resolved": version.resolved, "store size": f"{version.store_size} px" if version.store_size else
              "the source's default", "classes": f"{len(version.classes)}: {', '.join(version.classes[:12])}"
              + (" ..." if len(version.classes) > 12 else ""), "skipped": skipped,
              "created": record["created"], "versions": ", ".join(record["versions"])}
    _print_pairs(fields, "  ")
    print("  splits:")
    _print_pairs({split: _split_counts(c) for split, c in version.counts.items() if c is not None}, "    ")
    print("  artifacts:" + ("" if record["artifacts"] else " none (vipr data split ... --register "
                                                           f"{version.ref})"))
    for item in record["artifacts"]:
        meta = ", ".join(f"{k}={v}" for k, v in item["meta"].items() if v is not None)
        print(f"    {item['kind']}  {item['path']}  sha256 {item['sha256'][:12]}  {meta}")
    return 0


def _split_counts(counts: dict) -> str:
    extra = [f"{counts[k]:,} {k}" for k in ("unlabelled", "instances") if counts.get(k)]
    return f"{counts['images']:,} images" + (f" ({', '.join(extra)})" if extra else "")


def _total(version) -> int:
    return sum(c["images"] for c in version.counts.values() if c)


def _images(version) -> str:
    return ", ".join(f"{c['images']:,} {split}" for split, c in version.counts.items() if c) + " images"


def _print_pairs(values: dict, indent: str) -> None:
    width = max((len(k) for k in values), default=0)
    for key, value in values.items():
        print(f"{indent}{key.ljust(width)}  {value}")


def _print_table(header: tuple, rows: list[tuple]) -> None:
    lines = [header, *rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
