"""``vipr features``: a backbone's embeddings of a data source, with labels and names, for users' own work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vipr.cli.options import FeaturesOptions
from vipr.cli.parser import add_backbone_flag, add_device_flag, add_json_flag

HELP = """Write the frozen features of a backbone (those kNN and the linear probe score: pooled,
pre-head, with the checkpoint's preprocessing) for every image of a data source, with the
split, row, label, class name and name (file path in an image folder, SPLIT/ROW otherwise)
of each row. The type of --out picks the format:

  FILE.npy      the (N, D) float32 matrix, plus FILE.labels.csv (split,row,label,class,name):
                  x = np.load("f.npy"); rows = pandas.read_csv("f.labels.csv")
  FILE.npz      one file: d = np.load("f.npz"); d["features"], d["labels"], d["name"], d["split"],
                  d["row"], d["class_name"], d["classes"]
  FILE.parquet  one table (pyarrow; pip install 'vipr[parquet]'): df = pandas.read_parquet("f.parquet"),
                  columns split, row, label, class, name, features (D floats a row)

Rows come in split order, train then test. --checkpoint takes a run folder, a .pt file, a
registered NAME[@ALIAS|/VERSION] (vipr model list), or `random` (then --backbone and
--image-size say which). An existing --out is replaced, atomically.

  vipr features --checkpoint runs/pretrain --data photos/ --out photos.npz"""


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="write a backbone's embeddings of a data source (.npy, .npz, .parquet)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    o = FeaturesOptions
    p.add_argument("--checkpoint", required=True, metavar="DIR|FILE|NAME|random")
    p.add_argument("--data", required=True, metavar="SRC", help="data source (image folder, CIFAR, .npz, builtin:...)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="FILE.npy (+ FILE.labels.csv), FILE.npz or FILE.parquet")
    p.add_argument("--split", metavar="SPLIT", help=f"all | train | test (default {o.split})")
    add_backbone_flag(p, "backbone for --checkpoint random: ")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, metavar="B", help=f"images per forward pass (default {o.batch_size})")
    add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from vipr.cli.options import read_options
    from vipr.cli.paths import check_out_file
    from vipr.engine.device import resolve_device
    from vipr.eval.feature_table import check_format, run_features, written_files

    options = read_options(FeaturesOptions, args)  # every bad value before any data is read
    resolve_device(options.device)
    check_format(args.out)
    for path in written_files(args.out):
        check_out_file(path, "--out" if path == Path(args.out) else "--out's labels file")
    summary = run_features(checkpoint=resolve_checkpoint(args.checkpoint), data=args.data, out=args.out,
                           split=options.split, backbone=args.backbone, image_size=options.image_size,
                           batch_size=options.batch_size, device=options.device, progress=not args.no_progress)
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(f"features: {summary['rows']} x {summary['dim']} ({splits}) of {summary['backbone']} -> "
          f"{' + '.join(summary['files'])}")
    if args.json:
        print(json.dumps(summary))
    return 0


def resolve_checkpoint(ref: str) -> str:
    """A checkpoint file or run folder for ``ref``: the path itself, ``random``, or a registered model's file."""
    from vipr.engine.card import RANDOM
    from vipr.platform.registry import resolve_source

    return ref if ref == RANDOM else str(resolve_source(ref, "--checkpoint"))
