"""``vipr eval KIND``: measure a backbone on a labelled train/test source (KIND: vipr.eval.protocols)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from vipr.cli.options import EvalOptions, FewshotOptions, FinetuneOptions, KnnOptions
from vipr.cli.parser import (Parser, add_backbone_flag, add_device_flag, add_init_weights_flag, add_json_flag,
                             add_track_flag)
from vipr.cli.sections import add_config_flags
from vipr.errors import ConfigError
from vipr.eval.protocols import get_protocol, list_protocols

OPTIONS = {"knn": KnnOptions, "linear": EvalOptions, "finetune": FinetuneOptions, "fewshot": FewshotOptions}

NOTES = """--checkpoint takes a run folder, a .pt file, or `random` (random-init baseline; then
--backbone and --image-size say which). Scores are on the test split, in %; with --json the
last line is one JSON object holding at least "top1"."""

def eval_help() -> str:
    """The group's help, quoting the defaults the commands run with (built when --help asks)."""
    from vipr.eval.finetune import BACKBONE_LR_SCALE

    knn, ft = KnnOptions, FinetuneOptions
    return f"""Evaluate a backbone; `vipr eval KIND --help` lists each kind's options.

  knn       weighted k-nearest-neighbour vote on frozen features (k={knn.k}, T={knn.temperature} by default)
  linear    a linear classifier on frozen features computed once
  finetune  the whole network fine-tuned on the labelled train images (SGD, Nesterov, cosine,
            lr {ft.lr:g} for the head and {ft.lr * BACKBONE_LR_SCALE:g} for the backbone, {ft.epochs} epochs and
            at least {ft.min_steps} steps, crop + flip); --strategy auto keeps the frozen features'
            linear probe instead where that scores higher on held-out labels
  fewshot   N-way K-shot episodes on frozen test-split features, prototype classifier;
            mean accuracy and its 95% interval

linear and finetune save the classifier (backbone + head + classes + preprocessing) as
OUT/classifier.pt; fewshot draws its episodes from the labelled test split, the others fit
on the train split, or on the labelled subset --label-split FILE (from `vipr data split`).

{NOTES}"""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help=f"evaluate a backbone ({', '.join(list_protocols())})", description=eval_help,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=Parser)
    protocols = [get_protocol(kind) for kind in list_protocols()]
    parsers = {pr.name: kinds.add_parser(pr.name, help=pr.summary, description=f"{pr.summary}.\n\n{NOTES}",
                                         formatter_class=argparse.RawDescriptionHelpFormatter) for pr in protocols}
    for protocol in protocols:
        parser = parsers[protocol.name]
        _add_common(parser, classifier=protocol.classifier)
        if protocol.label_split:
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
    add_config_flags(p)
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
    p.add_argument("--strategy", choices=("full", "auto"),
                   help=f"full: fine-tune the whole network; auto: hold out a fifth of each class's labels, fit the "
                        f"full fine-tune and the frozen features' linear probe on the rest, keep the better one "
                        f"(fitted again on every label; one more fine-tune of cost). Default {ft.strategy}")
    add_init_weights_flag(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the fine-tune that Ctrl-C or SIGTERM stopped in --out, bit for bit (same settings)")


def _add_fewshot(p) -> None:
    fs = FewshotOptions
    p.add_argument("--ways", type=int, metavar="N", help=f"classes per episode (default {fs.ways})")
    p.add_argument("--shots", type=int, metavar="K", help=f"labelled support images per class (default {fs.shots})")
    p.add_argument("--queries", type=int, metavar="Q", help=f"query images per class (default {fs.queries})")
    p.add_argument("--episodes", type=int, metavar="E", help=f"episodes averaged (default {fs.episodes})")
    p.add_argument("--seed", type=int, help=f"episode sampling seed (default {fs.seed})")


def run(args) -> int:
    from vipr.cli.paths import check_out_dir
    from vipr.cli.runs import tracked

    config = read_config(args)  # every bad number before any data is read
    if getattr(args, "resume", False) and not args.out:
        raise ConfigError("--resume needs --out: the run folder of the stopped fine-tune")
    options = getattr(config, args.kind)
    from vipr.engine.device import resolve_device

    resolve_device(options.device)  # a device this machine lacks, before any work
    from vipr.platform.tracking import default_run_folder, track_run

    out = args.out or default_run_folder(f"eval-{args.kind}", args.no_track)  # tracked without --out too
    if out:
        check_out_dir(out)  # before the work: the score must not be lost to an unwritable folder
    given = config.input
    common = dict(checkpoint=given.checkpoint, data=given.data, backbone=given.backbone, image_size=options.image_size,
                  out=out, device=options.device, progress=not args.no_progress)
    with tracked(out, f"eval-{args.kind}", args.no_track):
        metrics = evaluate(args, options, common, label_split=given.label_split)
    if out:
        from vipr.engine.rundir import write_config

        write_config(out, config)  # the resolved config, as every run folder holds it
        track_run(out, f"eval-{args.kind}", args.no_track)
    if args.json:
        print(json.dumps(metrics))
    return 0


def read_config(args):
    """The resolved config of ``vipr eval KIND``: ``input`` and the protocol's options as section KIND."""
    from vipr.cli.sections import INPUT_FLAGS, eval_config_class, option_keys, read_sectioned

    options = OPTIONS.get(args.kind, EvalOptions)
    config = read_sectioned(eval_config_class(args.kind, options), args,
                            {**INPUT_FLAGS, **option_keys(args.kind, options)})
    if config.input.label_split and not get_protocol(args.kind).label_split:
        raise ConfigError(f"input.label_split: {args.kind} takes no label split (it draws from the labelled "
                          f"test split); drop the key")
    return config


def evaluate(args, options, common: dict, label_split: str | None = None) -> dict:
    """Run the registered protocol ``args.kind`` and print its one-line summary; returns its metrics."""
    protocol = get_protocol(args.kind)
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in common}  # k, epochs, ways, ...
    if protocol.label_split:
        settings["label_split"] = label_split
    if getattr(args, "resume", False):
        settings["resume"] = True
    metrics = protocol.run(**settings, **common)
    print(protocol.headline.format(**metrics))
    return metrics
