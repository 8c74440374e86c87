"""``vipr data info|split|export|register|list|show``: inspect a source, draw a labelled subset, write a dense source
as COCO files, and keep dataset versions (cli.data_versions_cmd)."""

from __future__ import annotations

import json

from vipr.cli import data_versions_cmd
from vipr.cli.options import SplitOptions


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect data sources, make label splits, register dataset versions")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = data_sub.add_parser("info", help="classes, counts, image size (px), store size (MB), digest, skipped files")
    info.add_argument("src", metavar="SRC")
    info.add_argument("--json", action="store_true", help="print the whole report as JSON")
    info.add_argument("--no-progress", action="store_true", help="no decoding bar (off a terminal: none anyway)")
    info.set_defaults(run=run_info)
    split = data_sub.add_parser("split", help="stratified labelled subset of the train split",
                                description="Write the indices of a stratified, deterministic labelled subset "
                                            "(at least one image per class) for --label-split.")
    split.add_argument("src", metavar="SRC")
    group = split.add_mutually_exclusive_group(required=True)
    group.add_argument("--label-fraction", type=float, metavar="F", help="fraction of each class, in (0, 1], e.g. 0.01")
    group.add_argument("--per-class", type=int, metavar="K", help="K >= 1 images of each class")
    split.add_argument("--seed", type=int, help=f"random seed (default {SplitOptions.seed})")
    split.add_argument("--out", required=True, metavar="FILE")
    split.add_argument("--register", metavar="NAME:VERSION",
                       help="record the split file as an artifact of that dataset version (automatic when SRC "
                            "is NAME:VERSION)")
    split.add_argument("--no-progress", action="store_true", help="no decoding bar (off a terminal: none anyway)")
    split.set_defaults(run=run_split)
    export = data_sub.add_parser("export", help="write a detection / segmentation source as a COCO tree",
                                 description="Write SRC (e.g. builtin:scenes) as OUT/{train,val}/*.png and "
                                             "OUT/annotations/instances_{train,val}.json (RLE masks), which "
                                             "--data coco:OUT reads back and any COCO tool opens.")
    export.add_argument("src", metavar="SRC")
    export.add_argument("--out", required=True, metavar="DIR")
    export.set_defaults(run=run_export)
    data_versions_cmd.add_parsers(data_sub)


def run_info(args) -> int:
    from vipr.data.dense.info import dense_source_info, format_dense_info
    from vipr.data.info import dataset_info, format_info
    from vipr.data.sources import open_dataset

    info = dense_source_info(args.src)  # detection / segmentation sources report instances and box sizes
    if info is None:  # classification data (the table's skipped line replaces open_dataset's warning)
        info = dataset_info(open_dataset(args.src, quiet=True, progress=not args.no_progress))
        from vipr.data.stores import store_estimates

        info["stores"] = store_estimates(args.src)  # image folders: raw vs encoded sizes, and auto's choice
        if not args.json:
            print(format_info(info))
            return 0
    if args.json:
        print(json.dumps(info))
        return 0
    print(format_dense_info(info))
    return 0


def run_split(args) -> int:
    from vipr.cli.options import read_options
    from vipr.cli.paths import check_out_file

    options = read_options(SplitOptions, args)  # before torch and the data are loaded
    check_out_file(args.out)
    if args.register:  # an unknown version fails before the data is decoded
        from vipr.platform.dataset_refs import get

        get(args.register)
    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split, save_label_split

    dataset = open_dataset(args.src, progress=not args.no_progress)
    chosen = dict(label_fraction=options.label_fraction, per_class=options.per_class, seed=options.seed)
    indices = make_label_split(dataset.train.labels, class_names=dataset.classes, **chosen)
    save_label_split(args.out, indices, dataset, **chosen)
    print(f"{len(indices)} of {len(dataset.train)} train images labelled -> {args.out}")
    ref = args.register or (dataset.name if dataset.source else None)  # opened as NAME:Vn: registered there
    if ref:
        from vipr.platform.dataset_register import register_split

        version, _ = register_split(ref, args.out, dataset.digest, {**chosen, "labelled": len(indices)})
        print(f"recorded {args.out} as a label_split artifact of {version.ref}")
    return 0


def run_export(args) -> int:
    from vipr.cli.paths import check_out_dir
    from vipr.data.dense.sources import is_dense_source, open_dense
    from vipr.errors import DataError

    if not is_dense_source(args.src):
        raise DataError(f"{args.src} is not a detection / segmentation source; export takes coco:, voc:, masks: "
                        "or builtin:scenes")
    check_out_dir(args.out)
    from vipr.data.dense.export import write_coco

    ds = open_dense(args.src)
    root = write_coco(ds, args.out)
    sizes = ", ".join(f"{len(s)} {name}" for name, s in (("train", ds.train), ("val", ds.test)) if s is not None)
    print(f"wrote {sizes} images of {args.src} as COCO: {root}/annotations/instances_*.json")
    return 0
