"""``vipr config show COMMAND``: the defaults a command runs with, as the YAML ``--config`` reads."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable

import yaml

from vipr.cli.parser import Parser
from vipr.errors import ConfigError

HELP = """Print the defaults of a command as YAML: the file `--config` reads and a run folder's
config.yaml holds. Save it, edit it, pass it back with --config FILE; --set KEY=VALUE here
shows the config those overrides resolve to.

  vipr config show pretrain --method byol
  vipr config show nas search --strategy pcdarts
  vipr config show eval finetune
  vipr config show transfer detect
  vipr config show serve"""


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="show the default config of a command", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=lambda args: p.print_help() or 0)
    commands = p.add_subparsers(dest="config_command", metavar="COMMAND", parser_class=Parser)
    show = commands.add_parser("show", help="print a command's default config as YAML", description=HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("target", nargs="+", metavar="COMMAND",
                      help="pretrain | nas search | nas train | eval KIND | transfer TASK | serve")
    show.add_argument("--method", help="pretrain: this method's section (vipr pretrain --method)")
    show.add_argument("--strategy", help="nas search: this strategy's section (vipr nas search --strategy)")
    show.add_argument("--config", metavar="FILE", help="show what this YAML file resolves to (and check it)")
    show.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                      help="show the config with these overrides (e.g. data.image_size=224)")
    show.set_defaults(run=run_show)


def run_show(args) -> int:
    text = show_config(args.target, method=args.method, strategy=args.strategy, overrides=args.set,
                       config_file=args.config)
    sys.stdout.write(text)
    return 0


def show_config(target: list[str], *, method: str | None = None, strategy: str | None = None,
                overrides: list[str] = (), config_file: str | None = None) -> str:
    """The YAML text of the defaults of ``target`` (``["nas", "search"]``), with a note on where some came from."""
    from vipr.config import apply_overrides, load_yaml, to_dict

    name = " ".join(target)
    builders = _builders()
    if name not in builders:
        from vipr.config import suggest

        raise ConfigError(f"unknown command '{name}'{suggest(name, builders)}")
    if method and name != "pretrain":
        raise ConfigError(f"--method {method}: only `config show pretrain` has a method section")
    if strategy and name != "nas search":
        raise ConfigError(f"--strategy {strategy}: only `config show nas search` has a strategy section")
    names = [*([f"method.name={method}"] if method else []), *([f"strategy.name={strategy}"] if strategy else [])]
    data = apply_overrides(load_yaml(config_file) if config_file else {}, [*names, *overrides])
    try:
        config, note = builders[name](data)
    except ConfigError as err:
        given = " ".join(f"--{k} {v}" for k, v in (("method", method), ("strategy", strategy)) if v)
        raise ConfigError(f"{given}: {err}" if given and "name" in str(err) else str(err)) from None
    body = yaml.safe_dump(to_dict(config), sort_keys=False)
    given = " ".join([*([f"--config {config_file}"] if config_file else []), *overrides])
    return f"# vipr {name}: defaults{' with ' + given if given else ''}\n{note}{body}"


def _builders() -> dict[str, Callable[[dict], tuple[object, str]]]:
    from vipr.eval.protocols import list_protocols

    builders = {"pretrain": _pretrain, "nas search": _nas_search, "nas train": _nas_train, "serve": _serve,
                "distill": lambda data: _pretrain({**data, "method": {"name": "seed", **(data.get("method") or {})}})}
    for kind in list_protocols():
        builders[f"eval {kind}"] = lambda data, kind=kind: (_eval(kind, data), "")
    for task in ("detect", "instance", "segment"):
        builders[f"transfer {task}"] = lambda data, task=task: (_transfer(task, data), "")
    return builders


def _transfer(task: str, data: dict):
    from vipr.config import from_dict
    from vipr.transfer.config import TransferConfig, check_config

    config = from_dict(TransferConfig, {**data, "task": task})
    check_config(config)
    return config


def _pretrain(data: dict) -> tuple[object, str]:
    from vipr.pretrain import build_config

    config = build_config(data)
    return config, profile_note(config, data)


def profile_note(config, data: dict) -> str:
    """Comment lines naming the values the small-image profile set (vipr.profiles), when it applies."""
    from vipr.config import leaf_keys, to_dict
    from vipr.pretrain import build_config
    from vipr.profiles import SMALL_IMAGE_SIDE

    if config.data.profile != "small":
        return ""
    large = build_config({**data, "data": {**(data.get("data") or {}), "profile": "large"}})
    ours, theirs = _flat(to_dict(config)), _flat(to_dict(large))
    changed = [f"{key} {json.dumps(ours[key])}" for key in leaf_keys(type(config), data) if key in ours
               and key != "data.profile" and ours[key] != theirs.get(key)]
    text = (f"data.profile small (data.image_size {config.data.image_size} <= {SMALL_IMAGE_SIDE} px): the small-image "
            f"recipe (vipr.profiles) sets {', '.join(changed) or 'no value'}; the papers' values with --set "
            f"data.profile=large. A value you give always wins.")
    return "".join(f"# {line}\n" for line in textwrap.wrap(text, 98))


def _flat(tree: dict, path: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{path}{key}."))
        else:
            out[f"{path}{key}"] = value
    return out


def _nas_search(data: dict) -> tuple[object, str]:
    from vipr.nas.search import build_config

    return build_config(data), ""


def _nas_train(data: dict) -> tuple[object, str]:
    from vipr.config import from_dict
    from vipr.nas.train import NasTrainConfig

    return from_dict(NasTrainConfig, data), ""


def _eval(kind: str, data: dict):
    from vipr.cli.eval_cmd import OPTIONS
    from vipr.cli.options import EvalOptions
    from vipr.cli.sections import eval_config_class
    from vipr.config import from_dict

    return from_dict(eval_config_class(kind, OPTIONS.get(kind, EvalOptions)), data)


def _serve(data: dict) -> tuple[object, str]:
    from vipr.cli.serve_cmd import serve_config_class
    from vipr.config import from_dict

    return from_dict(serve_config_class(), data), ""
