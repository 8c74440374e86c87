"""The sectioned config of the commands whose settings are options (eval KIND, serve).

Like pre-training and NAS, each takes ``--config FILE`` and ``--set section.key=value``; its
typed options class is one section of a frozen config (``knn.k``, ``finetune.epochs``,
``serve.max_batch_size``), and ``eval`` has an ``input`` section for what it measures. The
resolved config is what ``vipr config show`` prints and what an eval run folder's
config.yaml holds. Precedence: the file, then the flags, then ``--set``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, make_dataclass
from typing import Any, TypeVar

from vipr.cli.options import flag
from vipr.config import ConfigValueError, apply_overrides, from_dict, load_yaml
from vipr.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class EvalInput:
    """What an evaluation measures, and on what."""

    checkpoint: str | None = None  # a run folder, a .pt file, a registered model, or "random"
    data: str | None = None  # a source with train and test splits
    label_split: str | None = None  # fit on this labelled subset of the train split (vipr data split)
    backbone: str | None = None  # the architecture of checkpoint "random"


INPUT_FLAGS = {"checkpoint": "input.checkpoint", "data": "input.data", "label_split": "input.label_split",
               "backbone": "input.backbone"}


def sectioned(name: str, sections: dict[str, type]) -> type:
    """A frozen config class whose fields are ``sections`` (name -> dataclass), each defaulted."""
    fields = [(key, cls, field(default_factory=cls)) for key, cls in sections.items()]
    return make_dataclass(name, fields, frozen=True)


def eval_config_class(kind: str, options: type) -> type:
    """``input`` + the protocol's options as section ``kind``: ``--set knn.k=50``."""
    return sectioned(f"Eval{kind.title()}Config", {"input": EvalInput, kind: options})


def option_keys(section: str, options: type) -> dict[str, str]:
    """argparse destination -> dotted key for each field of ``options``."""
    return {f.name: f"{section}.{f.name}" for f in dataclasses.fields(options)}


def read_sectioned(cls: type[T], args: Any, flag_keys: dict[str, str]) -> T:
    """``cls`` from ``--config``, the given flags (destination -> dotted key) and ``--set``.

    A flag's value is taken as parsed (a path stays the string it was); a bad value given by
    a flag is named by the flag (``--k must be ...``), one given in the file or by --set by its key.
    """
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    given = {key: getattr(args, name) for name, key in flag_keys.items() if getattr(args, name, None) is not None}
    for key, value in given.items():
        section, _, leaf = key.partition(".")
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {node!r}")
        node[leaf] = value
    overrides = list(getattr(args, "set", None) or [])
    data = apply_overrides(data, overrides)
    set_keys = {item.partition("=")[0].strip() for item in overrides}
    try:
        return from_dict(cls, data)
    except ConfigValueError as err:
        names = {key: flag(name) for name, key in flag_keys.items()}
        if err.key in given and err.key not in set_keys:
            raise ConfigError(err.describe(names[err.key])) from None
        raise


def add_config_flags(parser) -> None:
    """--config and --set, as the training commands have them."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see `vipr config show`); flags and --set "
                                                         "override it")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. section.key=value (repeatable)")
