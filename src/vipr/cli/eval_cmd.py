"""``vipr eval knn|linear|finetune|fewshot``: measure a backbone on a labelled train/test source."""

from __future__ import annotations

import argparse
import json

from vipr.cli.options import EvalOptions, FewshotOptions, FinetuneOptions, KnnOptions
from vipr.cli.parser import (Parser, add_backbone_flag, add_device_flag, add_init_weights_flag, add_json_flag,
                             add_track_flag)

OPTIONS = {"knn": KnnOptions, "linear": EvalOptions, "finetune": FinetuneOptions, "fewshot": FewshotOptions}

NOTES = """--checkpoint takes a run folder, a .pt file, or `random` (random-init baseline; then
--backbone and --image-size say which). Scores are on the test split, in %; with --json the
last line is one JSON object holding at least "top1"."""

KIND_HELP = {
    "knn": "weighted kNN vote on frozen features",
    "linear": "linear probe on frozen features (saves classifier.pt)",
    "finetune": "fine-tune the whole network on labelled images (saves classifier.pt)",
    "fewshot": "N-way K-shot episodes, prototype classifier on frozen features",
}


def eval_help() -> str:
    """The group's help, quoting the defaults the commands run with (built when --help asks)."""
    from vipr.eval.finetune import BACKBONE_LR_SCALE

    knn, ft = KnnOptions, FinetuneOptions
    return f"""Evaluate a backbone; `vipr eval KIND --help` lists each kind's options.

  knn       weighted k-nearest-neighbour vote on frozen features (k={knn.k}, T={knn.temperature} by default)
  linear    a linear classifier on frozen features computed once
  finetune  the whole network fine-tuned on the labelled train images (SGD, Nesterov, cosine,
            lr {ft.lr:g} for the head and {ft.lr * BACKBONE_LR_SCALE:g} for the backbone, {ft.epochs} epochs and
            at least {ft.min_steps} steps, crop + flip)
  fewshot   N-way K-shot episodes on frozen test-split features, prototype classifier;
            mean accuracy and its 95% interval

linear and finetune save the classifier (backbone + head + classes + preprocessing) as
OUT/classifier.pt; fewshot draws its episodes from the labelled test split, the others fit
on the train split, or on the labelled subset --label-split FILE (from `vipr data split`).

{NOTES}"""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a backbone (knn, linear, finetune, fewshot)", description=eval_help,
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
    knn = KnnOptions
    parsers["knn"].add_argument("--k", type=int, metavar="K", help=f"neighbours (default {knn.k})")
    parsers["knn"].add_argument("--temperature", type=float, metavar="T",
                                help=f"weight temperature (default {knn.temperature})")
    _add_finetune(parsers["finetune"])
    _add_fewshot(parsers["fewshot"])


def _add_common(p, classifier: bool) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR|FILE|random")
    p.add_argument("--data", required=True, metavar="SRC", help="source with train and test splits")
    add_backbone_flag(p, "backbone for --checkpoint random: ")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the checkpoint's)")
    saved = "metrics.json, plots/ and classifier.pt" if classifier else "metrics.json and plots/"
    p.add_argument("--out", metavar="DIR", help=f"run folder for {saved} (default: a new folder in the "
                                                "workspace's runs/ while the run is tracked)")
    add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_track_flag(p)
    add_json_flag(p)


def _add_finetune(p) -> None:
    ft = FinetuneOptions
    p.add_argument("--epochs", type=int, metavar="N", help=f"passes over the labelled images (default {ft.epochs})")
    p.add_argument("--batch-size", type=int, metavar="B", help=f"images per step (default {ft.batch_size})")
    p.add_argument("--min-steps", type=int, metavar="S",
                   help=f"train at least this many steps, adding epochs for small label sets (default {ft.min_steps})")
    p.add_argument("--lr", type=float, help=f"head learning rate per batch of 64; the backbone gets lr/10 "
                                            f"(default {ft.lr:g})")
    p.add_argument("--seed", type=int, help=f"batch order and augmentation seed (default {ft.seed})")
    add_init_weights_flag(p)


def _add_fewshot(p) -> None:
    fs = FewshotOptions
    p.add_argument("--ways", type=int, metavar="N", help=f"classes per episode (default {fs.ways})")
    p.add_argument("--shots", type=int, metavar="K", help=f"labelled support images per class (default {fs.shots})")
    p.add_argument("--queries", type=int, metavar="Q", help=f"query images per class (default {fs.queries})")
    p.add_argument("--episodes", type=int, metavar="E", help=f"episodes averaged (default {fs.episodes})")
    p.add_argument("--seed", type=int, help=f"episode sampling seed (default {fs.seed})")


def run(args) -> int:
    from vipr.cli.options import read_options
    from vipr.cli.paths import check_out_dir
    from vipr.cli.runs import tracked

    options = read_options(OPTIONS[args.kind], args)  # every bad number before any data is read
    from vipr.engine.device import resolve_device

    resolve_device(options.device)  # a device this machine lacks, before any work
    from vipr.platform.tracking import default_run_folder, track_run

    out = args.out or default_run_folder(f"eval-{args.kind}", args.no_track)  # tracked without --out too
    if out:
        check_out_dir(out)  # before the work: the score must not be lost to an unwritable folder
    common = dict(checkpoint=args.checkpoint, data=args.data, backbone=args.backbone, image_size=options.image_size,
                  out=out, device=options.device, progress=not args.no_progress)
    with tracked(out, f"eval-{args.kind}", args.no_track):
        metrics = evaluate(args, options, common)
    if out:
        track_run(out, f"eval-{args.kind}", args.no_track)
    if args.json:
        print(json.dumps(metrics))
    return 0


def evaluate(args, options, common: dict) -> dict:
    """Run the evaluation ``args.kind`` and print its one-line summary; returns its metrics."""
    if args.kind == "fewshot":
        from vipr.eval.fewshot import run_fewshot

        metrics = run_fewshot(ways=options.ways, shots=options.shots, queries=options.queries,
                              episodes=options.episodes, seed=options.seed, **common)
        print(f"fewshot {options.ways}-way {options.shots}-shot: {metrics['accuracy']:.2f}% +/- "
              f"{metrics['ci95']:.2f} (95% interval over {options.episodes} episodes)")
        return metrics
    if args.kind == "finetune":
        from vipr.eval.finetune import run_finetune

        metrics = run_finetune(label_split=args.label_split, epochs=options.epochs, min_steps=options.min_steps,
                               batch_size=options.batch_size, lr=options.lr, seed=options.seed,
                               init_weights=options.init_weights, **common)
    else:
        from vipr.eval.runner import run_eval

        knn = {"k": options.k, "temperature": options.temperature} if args.kind == "knn" else {}
        metrics = run_eval(args.kind, label_split=args.label_split, **knn, **common)
    print(f"{args.kind}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%")
    return metrics
