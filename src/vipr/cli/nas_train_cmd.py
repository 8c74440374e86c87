"""``vipr nas train``: train the evaluation network of a searched genotype (added to the ``nas`` group)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from vipr.cli.options import naming_flags
from vipr.cli.parser import add_device_flag, add_init_weights_flag, add_json_flag, add_run_flags, config_overrides
from vipr.cli.parser import add_track_flag
from vipr.cli.paths import check_out_dir
from vipr.config import ConfigValueError, from_dict
from vipr.errors import ConfigError

HELP = """Train the network a genotype defines (DARTS' evaluation network), supervised, from scratch.

GENOTYPE is a genotype JSON written by `vipr nas search` (genotype.json, or one of a GOLD-NAS
series in genotypes/). The recipe is DARTS' CIFAR-10 evaluation: SGD momentum 0.9, weight
decay 3e-4, lr 0.025 cosine, gradient clipping 5, auxiliary tower 0.4, drop-path 0.2, Cutout
16 px at 32 px; 36 channels, 20 cells (a per-cell GOLD-NAS genotype fixes the cell count).
Prints parameters and FLOPs first. The run folder gets config.yaml, env.json, metrics.jsonl,
metrics.json (test accuracy) and checkpoint.pt, a vipr checkpoint that `vipr eval knn|linear|
finetune --checkpoint DIR` read. Ctrl-C or SIGTERM saves; --resume continues exactly.
Options map onto the typed config (sections data, network, optim, train: `vipr config show
nas train`); --set changes any other key, e.g. --set optim.grad_clip=0 optim.weight_decay=5e-4."""

# option -> dotted config key
FLAG_KEYS = {"data": "data.source", "image_size": "data.image_size", "cutout": "data.cutout",
             "channels": "network.channels", "layers": "network.layers", "auxiliary_weight": "network.auxiliary_weight",
             "drop_path": "network.drop_path", "init_weights": "network.init_weights", "lr": "optim.lr",
             "epochs": "train.epochs", "batch_size": "train.batch_size", "precision": "train.precision",
             "seed": "train.seed", "device": "train.device"}

def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the network of a genotype (supervised)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("genotype", nargs="?", metavar="GENOTYPE.json", help="genotype file from `vipr nas search`")
    p.add_argument("--genotype", dest="genotype_option", metavar="FILE", help="the same, as an option")
    p.add_argument("--data", metavar="SRC", help="labelled data source with a test split (default builtin:shapes)")
    p.add_argument("--out", metavar="DIR", default="runs/nas-train", help="run folder (default runs/nas-train)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 600)")
    p.add_argument("--channels", type=int, metavar="C", help="channels of the first cells (default 36)")
    p.add_argument("--layers", type=int, metavar="L", help="cells (default 20, or the genotype's per-cell count)")
    p.add_argument("--batch-size", type=int, metavar="B", help="global batch size (default 96)")
    p.add_argument("--lr", type=float, help="peak learning rate at --batch-size (default 0.025)")
    p.add_argument("--auxiliary-weight", type=float, metavar="W", help="auxiliary loss weight; 0 = no tower (0.4)")
    p.add_argument("--drop-path", type=float, metavar="P", help="final drop-path probability (default 0.2)")
    p.add_argument("--cutout", type=int, metavar="PX", help="Cutout square side; 0 = off (default 16 at 32 px)")
    p.add_argument("--image-size", type=int, metavar="PX", help="input side (default: the data's)")
    add_init_weights_flag(p)
    add_device_flag(p)
    add_run_flags(p)
    add_track_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def config_from_args(args):
    from vipr.nas.train import NasTrainConfig

    if args.genotype and args.genotype_option and args.genotype != args.genotype_option:
        raise ConfigError(f"two genotypes given ({args.genotype} and --genotype {args.genotype_option}); pass one")
    try:
        config = from_dict(NasTrainConfig, config_overrides(args, FLAG_KEYS))
    except ConfigValueError as err:
        raise naming_flags(err, FLAG_KEYS) from None
    path = args.genotype or args.genotype_option  # not through YAML parsing: a path is a string as given
    if path and Path(path).is_dir():
        raise ConfigError(f"genotype {path} is a folder; pass the JSON file in it, e.g. {Path(path) / 'genotype.json'}")
    return replace(config, network=replace(config.network, genotype=path)) if path else config

def run(args) -> int:
    from vipr.engine import distributed as dist
    from vipr.engine.device import resolve_device
    from vipr.nas.train import run_nas_train

    config = config_from_args(args)
    resolve_device(config.train.device)  # a device this machine lacks, before the run folder
    check_out_dir(args.out)
    from vipr.cli.runs import tracked
    from vipr.platform.tracking import track_run

    with tracked(args.out, "nas-train", args.no_track):
        metrics = run_nas_train(config, args.out, resume=args.resume)
    if dist.is_main():
        track_run(args.out, "nas-train", args.no_track)
        print(f"trained darts_net ({metrics['params'] / 1e6:.3f} M params, {metrics['flops'] / 1e6:.1f} M FLOPs): "
              f"test top-1 {metrics['test_top1']:.2f}%, checkpoint {metrics['checkpoint']}")
        if args.json:
            print(json.dumps(metrics))
    return 0
