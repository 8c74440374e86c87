"""``vipr distill``: distil a trained teacher into a student backbone, through the pre-training engine."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vipr.cli.choices import add_registry_flag
from vipr.cli.options import LaunchOptions, naming_flags, read_options
from vipr.cli.parser import add_device_flag, add_json_flag, add_run_flags, add_track_flag, config_overrides
from vipr.cli.paths import check_out_dir
from vipr.cli.pretrain_cmd import launch_torchrun
from vipr.cli.runs import tracked
from vipr.errors import ConfigError

HELP = """Distil a trained TEACHER into a (smaller) STUDENT on unlabeled images.

--teacher is a run folder, a checkpoint .pt or a registered NAME@ALIAS; --student a backbone
name, or a genotype JSON from `vipr nas search` (the student is then its darts_net). Methods:
seed (arXiv 2101.04731) and bingo (arXiv 2107.01691) need any backbone teacher; kd (Hinton) a
classifier teacher (`vipr eval linear --out`); feature (FitNets-style stage maps) any, with
--set method.kd_weight=W adding kd. The crop side defaults to the teacher's. This is
`vipr pretrain` with a distillation method: the same run folder, --resume, torchrun, tracking
and typed config (see config.yaml; `vipr config show distill --set method.name=kd`)."""

# option -> dotted config key (for messages: a bad value names its flag)
FLAG_KEYS = {"data": "data.source", "method": "method.name", "teacher": "method.teacher", "student": "model.backbone",
             "image_size": "data.image_size", "epochs": "train.epochs", "batch_size": "train.batch_size",
             "lr": "optim.lr", "precision": "train.precision", "seed": "train.seed", "device": "train.device"}
DEFAULT_METHOD = "seed"


def distill_names() -> list[str]:
    from vipr.distill.settings import distill_methods

    return distill_methods()


def backbone_names() -> list[str]:
    from vipr.models import list_backbones

    return list_backbones()


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="distil a teacher into a student backbone", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", metavar="SRC", help="run folder, checkpoint .pt or registered NAME@ALIAS")
    add_registry_flag(p, "--student", backbone_names, metavar="ARCH|GENOTYPE.json",
                      lead="the student: a genotype JSON (vipr nas search) or one of ")
    add_registry_flag(p, "--method", distill_names, default_name=DEFAULT_METHOD)
    p.add_argument("--data", metavar="SRC", help="data source (default builtin:shapes)")
    p.add_argument("--image-size", type=int, metavar="PX", help="crop side in pixels (default: the teacher's)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 100)")
    p.add_argument("--batch-size", type=int, metavar="B", help="global batch size (default 256)")
    p.add_argument("--lr", type=float, help="learning rate per 256 images (default 0.12 for images <= 64 px, else 0.3)")
    p.add_argument("--out", metavar="DIR", default="runs/distill", help="run folder (default runs/distill)")
    p.add_argument("--nproc-per-node", type=int, metavar="N",
                   help=f"processes (DDP via torchrun; default {LaunchOptions.nproc_per_node})")
    add_device_flag(p)
    add_run_flags(p)
    add_track_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def student_keys(value: str) -> dict[str, str]:
    """--student as config keys: a backbone name, or ``darts_net`` and the genotype file."""
    from vipr.config import suggest
    from vipr.models import list_backbones
    from vipr.nas import genotype as genotypes

    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"--student {value} is a folder; pass the genotype JSON in it, e.g. {path / 'genotype.json'}")
    if path.is_file() or path.suffix == ".json":
        try:
            genotypes.load(path)
        except ConfigError as err:
            raise ConfigError(f"--student {value} is not a genotype file ({err}); pass a vipr-genotype/1 JSON "
                              "from `vipr nas search`, or a backbone name") from None
        return {"model.backbone": "darts_net", "method.student_genotype": str(path.resolve())}
    if not value.startswith("timm:") and value not in list_backbones():
        raise ConfigError(f"--student {value}: unknown backbone{suggest(value, list_backbones())}")
    return {"model.backbone": value}


def read_config(args):
    """The resolved PretrainConfig of a distillation run, checked against its teacher (ConfigError otherwise).

    Every value is checked (types, ranges, the device) before the teacher is read, so a bad
    option is named as in ``vipr pretrain`` whatever the teacher."""
    from vipr.distill.run import check_distill_config
    from vipr.distill.teacher import teacher_card
    from vipr.engine.device import resolve_device

    student = student_keys(args.student) if args.student is not None else {}
    args.student_backbone, args.student_genotype = student.get("model.backbone"), student.get("method.student_genotype")
    keys = {**{k: v for k, v in FLAG_KEYS.items() if k != "student"},
            "student_backbone": "model.backbone", "student_genotype": "method.student_genotype"}
    data = config_overrides(args, keys)  # --config, then the flags, then --set
    check_method(data.setdefault("method", {}).setdefault("name", DEFAULT_METHOD))
    config = _typed(data)
    resolve_device(config.train.device)  # a device this machine lacks, before any file is read
    if "backbone" not in (data.get("model") or {}):
        raise ConfigError("no student given; pass --student ARCH (a backbone name) or --student GENOTYPE.json")
    if "image_size" not in (data.get("data") or {}):  # the teacher's crop side (and the profile it implies)
        data["data"] = {**(data.get("data") or {}), "image_size": teacher_card(config.method.teacher).image_size}
        config = _typed(data)
    check_distill_config(config)
    return config


def check_method(name) -> None:
    """ConfigError unless ``name`` is a distillation method."""
    if name in distill_names():
        return
    from vipr.config import suggest
    from vipr.ssl import list_methods

    elsewhere = f" (`vipr pretrain --method {name}` trains it)" if name in list_methods() else ""
    raise ConfigError(f"--method {name}: not a distillation method{suggest(str(name), distill_names())}{elsewhere}")


def _typed(data: dict):
    from vipr.config import ConfigValueError
    from vipr.pretrain import build_config

    try:
        return build_config(data)
    except ConfigValueError as err:
        raise naming_flags(err, FLAG_KEYS) from None


def run(args) -> int:
    launch = read_options(LaunchOptions, args)
    config = read_config(args)  # every bad input fails here, once, before torchrun starts its processes
    check_out_dir(args.out)
    if launch.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        return launch_torchrun(args.argv, launch.nproc_per_node)
    from vipr.distill.run import run_distill
    from vipr.engine import distributed as dist
    from vipr.platform.tracking import track_run

    with tracked(args.out, "pretrain", args.no_track):  # a distillation run is a pre-training run (its kind)
        metrics = run_distill(config, args.out, resume=args.resume)
    if dist.is_main():
        print(f"distilled {config.method.teacher} into {config.model.backbone} with {config.method.name}: "
              f"checkpoint {Path(args.out) / 'checkpoint.pt'}")
        track_run(args.out, "pretrain", args.no_track)
        if args.json:
            print(json.dumps(metrics))
    return 0
