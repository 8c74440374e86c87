"""``vipr nas``: differentiable architecture search (``search``; ``train`` from nas_train_cmd)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vipr.cli import nas_train_cmd
from vipr.cli.choices import add_registry_flag, strategy_names
from vipr.cli.options import naming_flags
from vipr.cli.parser import Parser, add_device_flag, add_json_flag, add_run_flags, config_overrides
from vipr.cli.parser import add_track_flag
from vipr.cli.paths import check_out_dir

SEARCH_HELP = """Search a cell architecture with a differentiable NAS strategy.

Strategies: darts (arXiv 1806.09055; --order 2 for the unrolled second-order gradient),
pdarts (arXiv 1904.12760: stages of 5/11/17 cells, ops per edge 8 -> 5 -> 3 -> 1, at most 2
skip-connects), pcdarts (arXiv 1907.05737: 1/K of the channels per edge, edge normalisation),
goldnas (arXiv 2007.03331: one-level, sigmoid gates, pruning; a series of genotypes).

SRC is any data source (builtin:shapes, an image folder, CIFAR, .npz); half of its train
images train the weights and half train the architecture (--set data.train_portion=0.5).
Options map onto the typed config (see config.yaml in the run folder); --set changes any
other key, e.g. --set strategy.partial_channels=2 strategy.warmup_epochs=5 train.precision=bf16.
--epochs counts per stage for pdarts. Defaults follow each paper (DARTS: 50 epochs, C=16,
8 cells, batch 64, 32 px; weight-only warm-up PC-DARTS 15 of 50, P-DARTS 10 of 25); --epochs
without --warmup-epochs keeps that share (pcdarts --epochs 10: 3 warm-up epochs).

The run folder gets genotype.json (the final architecture, with provenance), metrics.jsonl
(loss, val acc and the genotype of every epoch), config.yaml, env.json, metrics.json and
checkpoint.pt; Ctrl-C or SIGTERM saves a checkpoint and --resume continues exactly.
Train the found cell with `vipr nas train DIR/genotype.json` (or --genotype DIR/genotype.json)."""

# option -> dotted config key
FLAG_KEYS = {"strategy": "strategy.name", "data": "data.source", "epochs": "strategy.epochs",
             "warmup_epochs": "strategy.warmup_epochs", "order": "strategy.order", "layers": "network.layers",
             "channels": "network.channels", "batch_size": "train.batch_size", "image_size": "data.image_size",
             "precision": "train.precision", "seed": "train.seed", "device": "train.device"}


def add_parser(sub) -> None:
    nas = sub.add_parser("nas", help="differentiable architecture search (search, train)",
                         description="Differentiable architecture search: DARTS, P-DARTS, PC-DARTS, GOLD-NAS.")
    nas.set_defaults(run=lambda args: nas.print_help() or 0)
    nas_sub = nas.add_subparsers(dest="nas_command", metavar="COMMAND", parser_class=Parser)
    add_search_parser(nas_sub)
    nas_train_cmd.add_parser(nas_sub)


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a cell architecture", description=SEARCH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_registry_flag(p, "--strategy", strategy_names, default_name="darts")
    p.add_argument("--data", metavar="SRC", help="data source (default builtin:shapes)")
    p.add_argument("--out", metavar="DIR", default="runs/nas-search", help="run folder (default runs/nas-search)")
    p.add_argument("--epochs", type=int, metavar="N", help="search epochs (pdarts: per stage)")
    p.add_argument("--warmup-epochs", type=int, metavar="N", help="leading epochs that train weights only")
    p.add_argument("--order", type=int, choices=(1, 2), help="darts alpha gradient: 1 first order, 2 unrolled")
    p.add_argument("--layers", type=int, metavar="L", help="cells in the supernet (default 8)")
    p.add_argument("--channels", type=int, metavar="C", help="initial channels (default 16)")
    p.add_argument("--batch-size", type=int, metavar="B", help="images per weight step and per alpha step (default 64)")
    p.add_argument("--image-size", type=int, metavar="PX", help="crop side in pixels (default 32)")
    add_device_flag(p)
    add_run_flags(p, precision_help="auto | bf16 | fp16 | fp32 (auto: fp32 on CPU)")
    add_track_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_search_command)


def config_from_args(args) -> dict:
    return config_overrides(args, FLAG_KEYS)


def run_search_command(args) -> int:
    from vipr.config import ConfigValueError
    from vipr.engine.device import resolve_device
    from vipr.nas.search import build_config, run_search

    try:
        config = build_config(config_from_args(args))  # every config error before any data is read
    except ConfigValueError as err:
        raise naming_flags(err, FLAG_KEYS) from None
    resolve_device(config.train.device)  # a device this machine lacks, before the run folder
    check_out_dir(args.out)
    from vipr.cli.runs import tracked
    from vipr.platform.tracking import track_run

    with tracked(args.out, "nas-search", args.no_track):
        metrics = run_search(config, args.out, resume=args.resume)
    print(f"searched with {config.strategy.name}: genotype {Path(args.out) / 'genotype.json'}")
    track_run(args.out, "nas-search", args.no_track)
    if args.json:
        print(json.dumps(metrics))
    return 0
