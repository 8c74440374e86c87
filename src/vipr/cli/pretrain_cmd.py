"""``vipr pretrain``: self-supervised pre-training of a backbone."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from vipr.cli.choices import add_registry_flag, method_names
from vipr.cli.options import LaunchOptions, naming_flags, read_options
from vipr.cli.paths import check_out_dir
from vipr.cli.runs import tracked
from vipr.cli.parser import (add_backbone_flag, add_device_flag, add_init_weights_flag, add_json_flag, add_run_flags,
                             add_track_flag, config_overrides)

HELP = """Pre-train a backbone on unlabeled images with a self-supervised method.

SRC is an ImageFolder tree, a CIFAR python-batches folder, an .npz file, or a built-in
(builtin:shapes, builtin:digits). Options map onto the typed config (see config.yaml in
any run folder); --set changes any other key, e.g. --set optim.lr=0.1 method.queue_size=8192.
The run folder gets config.yaml, env.json, metrics.jsonl, metrics.json and checkpoint.pt;
Ctrl-C or SIGTERM saves a checkpoint, and --resume continues exactly where it stopped.
A finished run is logged to the workspace's MLflow store (`vipr ui`) unless --no-track."""

# option -> dotted config key
FLAG_KEYS = {"data": "data.source", "method": "method.name", "backbone": "model.backbone",
             "image_size": "data.image_size", "epochs": "train.epochs", "batch_size": "train.batch_size",
             "lr": "optim.lr", "precision": "train.precision", "seed": "train.seed", "device": "train.device",
             "init_weights": "model.init_weights"}


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="SRC", help="data source (default builtin:shapes)")
    add_registry_flag(p, "--method", method_names, default_name="moco_v2")
    add_backbone_flag(p, shown_default="resnet18")
    p.add_argument("--image-size", type=int, metavar="PX", help="crop side in pixels (default 32)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 100)")
    p.add_argument("--batch-size", type=int, metavar="B", help="global batch size (default 256)")
    p.add_argument("--lr", type=float, help="learning rate per 256 images (default 0.12 for images <= 64 px, else 0.3)")
    p.add_argument("--out", metavar="DIR", default="runs/pretrain", help="run folder (default runs/pretrain)")
    add_init_weights_flag(p)
    p.add_argument("--nproc-per-node", type=int, metavar="N",
                   help=f"processes (DDP via torchrun; default {LaunchOptions.nproc_per_node})")
    add_device_flag(p)
    add_run_flags(p)
    add_track_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def config_from_args(args) -> dict:
    return config_overrides(args, FLAG_KEYS)


def read_config(args):
    """The resolved PretrainConfig; a bad value names its option too (``--batch-size (train.batch_size)``)."""
    from vipr.config import ConfigValueError
    from vipr.pretrain import build_config

    try:
        return build_config(config_from_args(args))
    except ConfigValueError as err:
        raise naming_flags(err, FLAG_KEYS) from None


def run(args) -> int:
    launch = read_options(LaunchOptions, args)
    config = read_config(args)  # a bad option fails here, once, before torchrun starts its processes
    from vipr.engine.device import resolve_device

    resolve_device(config.train.device)  # a device this machine lacks, before the run folder
    check_out_dir(args.out)
    if launch.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        return launch_torchrun(args.argv, launch.nproc_per_node)
    from vipr.engine import distributed as dist
    from vipr.platform.tracking import track_run
    from vipr.pretrain import run_pretrain

    with tracked(args.out, "pretrain", args.no_track):
        metrics = run_pretrain(config, args.out, resume=args.resume)
    if dist.is_main():
        print(f"pre-trained {config.model.backbone} with {config.method.name}: checkpoint {Path(args.out) / 'checkpoint.pt'}")
        track_run(args.out, "pretrain", args.no_track)
        if args.json:
            print(json.dumps(metrics))
    return 0


def launch_torchrun(argv: list[str], nproc: int) -> int:
    """Re-run this same command under torchrun with ``nproc`` processes on this node."""
    cleaned, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc-per-node":
            skip = True
            continue
        if not item.startswith("--nproc-per-node="):
            cleaned.append(item)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "vipr.cli.main", *cleaned]
    torchrun = subprocess.Popen(cmd)
    # SIGTERM to this launcher (`kill`, a job's stop) reaches every rank exactly once, through torchrun: a
    # second one would abort a rank's checkpoint (vipr.engine.signals). Ctrl-C already reaches them all.
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: torchrun.send_signal(signum))
    try:
        return torchrun.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
