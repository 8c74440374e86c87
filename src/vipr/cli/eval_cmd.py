"""``vipr eval knn|linear``: measure a backbone's features on a labelled train/test source."""

from __future__ import annotations

import argparse
import json

from vipr.cli.parser import add_json_flag

HELP = """Evaluate a backbone's frozen features.

  knn     weighted k-nearest-neighbour vote (k=200, T=0.07 by default)
  linear  a linear classifier on features computed once; the classifier
          (backbone + head + classes + preprocessing) is saved as OUT/classifier.pt

--checkpoint takes a run folder, a .pt file, or `random` (random-init baseline; then
--backbone and --image-size say which). --label-split FILE (from `vipr data split`)
fits on that labelled subset of the train split. Scores are top-1/top-5 on the test split."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a backbone (knn, linear)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["knn", "linear"], help="evaluation protocol")
    p.add_argument("--checkpoint", required=True, metavar="DIR|FILE|random")
    p.add_argument("--data", required=True, metavar="SRC", help="source with train and test splits")
    p.add_argument("--backbone", help="backbone for --checkpoint random (e.g. resnet18)")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the checkpoint's)")
    p.add_argument("--label-split", metavar="FILE", help="fit on this labelled subset")
    p.add_argument("--out", metavar="DIR", help="run folder for metrics.json (and classifier.pt)")
    p.add_argument("--k", type=int, default=200, help="kNN neighbours (default 200)")
    p.add_argument("--temperature", type=float, default=0.07, help="kNN weight temperature (default 0.07)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from vipr.eval.runner import run_eval

    metrics = run_eval(args.kind, checkpoint=args.checkpoint, data=args.data, backbone=args.backbone,
                       image_size=args.image_size, label_split=args.label_split, out=args.out,
                       k=args.k, temperature=args.temperature, progress=not args.no_progress)
    print(f"{args.kind}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%")
    if args.json:
        print(json.dumps(metrics))
    return 0
