"""``vipr eval knn|linear|finetune|fewshot``: measure a backbone on a labelled train/test source."""

from __future__ import annotations

import argparse
import json

from vipr.cli.parser import Parser, add_backbone_flag, add_json_flag, add_track_flag

HELP = """Evaluate a backbone; `vipr eval KIND --help` lists each kind's options.

  knn       weighted k-nearest-neighbour vote on frozen features (k=200, T=0.07 by default)
  linear    a linear classifier on frozen features computed once
  finetune  the whole network fine-tuned on the labelled train images (SGD, Nesterov, cosine,
            lr 0.01 for the head and 0.001 for the backbone, 30 epochs, crop + flip)
  fewshot   N-way K-shot episodes on frozen test-split features, prototype classifier;
            mean accuracy and its 95% interval

linear and finetune save the classifier (backbone + head + classes + preprocessing) as
OUT/classifier.pt; fewshot draws its episodes from the labelled test split, the others fit
on the train split, or on the labelled subset --label-split FILE (from `vipr data split`).

"""

NOTES = """--checkpoint takes a run folder, a .pt file, or `random` (random-init baseline; then
--backbone and --image-size say which). Scores are on the test split, in %; with --json the
last line is one JSON object holding at least "top1"."""

KIND_HELP = {
    "knn": "weighted kNN vote on frozen features",
    "linear": "linear probe on frozen features (saves classifier.pt)",
    "finetune": "fine-tune the whole network on labelled images (saves classifier.pt)",
    "fewshot": "N-way K-shot episodes, prototype classifier on frozen features",
}


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a backbone (knn, linear, finetune, fewshot)", description=HELP + NOTES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=Parser)
    parsers = {kind: kinds.add_parser(kind, help=text, description=f"{text}.\n\n{NOTES}",
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
               for kind, text in KIND_HELP.items()}
    for kind, parser in parsers.items():
        _add_common(parser, classifier=kind in ("linear", "finetune"))
        if kind != "fewshot":
            parser.add_argument("--label-split", metavar="FILE", help="fit on this labelled subset of the train split")
        parser.set_defaults(run=run)
    parsers["knn"].add_argument("--k", type=int, default=200, help="neighbours (default 200)")
    parsers["knn"].add_argument("--temperature", type=float, default=0.07, help="weight temperature (default 0.07)")
    _add_finetune(parsers["finetune"])
    _add_fewshot(parsers["fewshot"])


def _add_common(p, classifier: bool) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR|FILE|random")
    p.add_argument("--data", required=True, metavar="SRC", help="source with train and test splits")
    add_backbone_flag(p, "backbone for --checkpoint random: ")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the checkpoint's)")
    saved = "metrics.json and classifier.pt" if classifier else "metrics.json"
    p.add_argument("--out", metavar="DIR", help=f"run folder for {saved}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_track_flag(p)
    add_json_flag(p)


def _add_finetune(p) -> None:
    p.add_argument("--epochs", type=int, default=30, metavar="N", help="passes over the labelled images (default 30)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per step (default 64)")
    p.add_argument("--min-steps", type=int, default=500, metavar="S",
                   help="train at least this many steps, adding epochs for small label sets (default 500)")
    p.add_argument("--lr", type=float, default=0.1, help="head learning rate per batch of 64; the backbone gets lr/10 (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="batch order and augmentation seed (default 0)")


def _add_fewshot(p) -> None:
    p.add_argument("--ways", type=int, default=5, metavar="N", help="classes per episode (default 5)")
    p.add_argument("--shots", type=int, default=5, metavar="K", help="labelled support images per class (default 5)")
    p.add_argument("--queries", type=int, default=15, metavar="Q", help="query images per class (default 15)")
    p.add_argument("--episodes", type=int, default=600, metavar="E", help="episodes averaged (default 600)")
    p.add_argument("--seed", type=int, default=0, help="episode sampling seed (default 0)")


def run(args) -> int:
    common = dict(checkpoint=args.checkpoint, data=args.data, backbone=args.backbone, image_size=args.image_size,
                  out=args.out, progress=not args.no_progress)
    if args.kind == "fewshot":
        from vipr.eval.fewshot import run_fewshot

        metrics = run_fewshot(ways=args.ways, shots=args.shots, queries=args.queries, episodes=args.episodes,
                              seed=args.seed, **common)
        print(f"fewshot {args.ways}-way {args.shots}-shot: {metrics['accuracy']:.2f}% +/- {metrics['ci95']:.2f} "
              f"(95% interval over {args.episodes} episodes)")
    else:
        if args.kind == "finetune":
            from vipr.eval.finetune import run_finetune

            metrics = run_finetune(label_split=args.label_split, epochs=args.epochs, min_steps=args.min_steps,
                                   batch_size=args.batch_size,
                                   lr=args.lr, seed=args.seed, **common)
        else:
            from vipr.eval.runner import run_eval

            knn = {"k": args.k, "temperature": args.temperature} if args.kind == "knn" else {}
            metrics = run_eval(args.kind, label_split=args.label_split, **knn, **common)
        print(f"{args.kind}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%")
    if args.out:
        from vipr.platform.tracking import track_run

        track_run(args.out, f"eval-{args.kind}", args.no_track)
    if args.json:
        print(json.dumps(metrics))
    return 0
