"""``vipr transfer``: detection, instance and semantic segmentation on a vipr backbone (train, eval, predict)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vipr.cli.options import LaunchOptions, naming_flags, read_options
from vipr.cli.parser import (add_backbone_flag, add_device_flag, add_json_flag, add_run_flags, add_track_flag,
                             config_overrides)
from vipr.cli.paths import check_out_dir

HELP = """Fine-tune a backbone for a downstream task, through vipr's one training engine.

  detect     boxes: Faster R-CNN with FPN (--model retinanet: RetinaNet)
  instance   boxes and masks: Mask R-CNN with FPN
  segment    a label map per image: FCN (--model aspp: DeepLabV3-style ASPP)

--checkpoint is a vipr run folder or .pt (pre-training, `vipr nas train`, a classifier), a
registered model NAME[@ALIAS], `random` (with --backbone), or a torchvision / timm state-dict
file (with --backbone); matched, missing and unexpected keys are printed and written to
init_weights.json. SRC is coco:ROOT, voc:ROOT, masks:ROOT or builtin:scenes[?size=128&...].
The run folder gets config.yaml, metrics.jsonl (losses per step), metrics.json (COCO AP/AR
and VOC mAP, or mIoU, on the test split) and checkpoint.pt, which `vipr transfer eval|predict`,
`vipr model register` and `vipr serve` read. Ctrl-C or SIGTERM saves; --resume continues
exactly. Sections: task, input, model, data, optim, train, eval (`vipr config show transfer`)."""

TRAIN_TASKS = {"detect": "boxes (Faster R-CNN / RetinaNet)", "instance": "boxes and masks (Mask R-CNN)",
               "segment": "semantic label maps (FCN / ASPP)"}
FLAG_KEYS = {"checkpoint": "input.checkpoint", "backbone": "input.backbone", "data": "input.data",
             "model": "model.kind", "norm": "model.norm", "trainable_stages": "model.trainable_stages",
             "image_size": "data.image_size", "lr": "optim.lr", "epochs": "train.epochs", "iters": "train.iters",
             "batch_size": "train.batch_size", "precision": "train.precision", "seed": "train.seed",
             "device": "train.device"}


def add_parser(sub) -> None:
    p = sub.add_parser("transfer", help="detection and segmentation on a vipr backbone", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="transfer_command", metavar="TASK", parser_class=type(p))
    for task, what in TRAIN_TASKS.items():
        _add_train_parser(tasks, task, what)
    from vipr.cli import transfer_eval_cmd

    transfer_eval_cmd.add_parsers(tasks)


def _add_train_parser(tasks, task: str, what: str) -> None:
    p = tasks.add_parser(task, help=f"fine-tune for {what}", description=HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="SRC", help="initial backbone (default random)")
    add_backbone_flag(p, lead="architecture for --checkpoint random or a state-dict file: ", shown_default="resnet18")
    p.add_argument("--data", metavar="SRC", help="dense data source (default builtin:scenes)")
    p.add_argument("--out", metavar="DIR", default=f"runs/transfer-{task}", help=f"run folder (default runs/transfer-{task})")
    p.add_argument("--model", metavar="KIND", help=_kinds_help(task))
    p.add_argument("--norm", help="backbone batch norm: frozen | bn | syncbn (default syncbn: trainable, synchronised "
                                  "over processes, as MoCo's transfer protocol; plain BN in one process)")
    p.add_argument("--trainable-stages", type=int, metavar="N", help="train only the last N backbone stages "
                                                                     "(default all; 0 freezes the backbone)")
    p.add_argument("--image-size", type=int, metavar="PX", help="canvas side the data is decoded to (default the source's)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the train split (default 12)")
    p.add_argument("--iters", type=int, metavar="N", help="steps; ends the run there (instead of --epochs)")
    p.add_argument("--batch-size", type=int, metavar="B", help="global batch size (default 4)")
    p.add_argument("--lr", type=float, help="peak learning rate of the heads at --batch-size (default 0.01)")
    p.add_argument("--nproc-per-node", type=int, metavar="N", help="processes (DDP via torchrun; default 1)")
    add_device_flag(p)
    add_run_flags(p, precision_help="auto | bf16 | fp16 | fp32 (default auto: bf16 on GPUs and AMX CPUs, else fp32)")
    add_track_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_train, task=task)


def _kinds_help(task: str) -> str:
    from vipr.transfer.config import TASK_KINDS

    kinds = TASK_KINDS[task]
    return f"{' | '.join(kinds)} (default {kinds[0]})"


def read_config(args):
    """The TransferConfig of the flags, --config and --set; a bad value names its flag."""
    from vipr.config import ConfigValueError, from_dict
    from vipr.transfer.config import TransferConfig, check_config

    data = config_overrides(args, FLAG_KEYS)
    data["task"] = args.task  # the subcommand is the task
    try:
        config = from_dict(TransferConfig, data)
    except ConfigValueError as err:
        raise naming_flags(err, FLAG_KEYS) from None
    check_config(config)
    return config


def run_train(args) -> int:
    launch = read_options(LaunchOptions, args)
    config = read_config(args)
    from vipr.engine.device import resolve_device

    resolve_device(config.train.device)  # a device this machine lacks, before the run folder
    check_out_dir(args.out)
    if launch.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        from vipr.cli.pretrain_cmd import launch_torchrun

        return launch_torchrun(args.argv, launch.nproc_per_node)
    from vipr.cli.runs import tracked
    from vipr.engine import distributed as dist
    from vipr.platform.tracking import track_run
    from vipr.transfer.run import run_transfer, summary_line

    kind = f"transfer-{config.task}"
    with tracked(args.out, kind, args.no_track):
        metrics = run_transfer(config, args.out, resume=args.resume)
    if dist.is_main():
        print(f"{summary_line(metrics)}; checkpoint {Path(args.out) / 'checkpoint.pt'}")
        track_run(args.out, kind, args.no_track)
        if args.json:
            print(json.dumps(metrics))
    return 0
