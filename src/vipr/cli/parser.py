"""argparse with "did you mean" for unknown options and errors without tracebacks."""

from __future__ import annotations

import argparse
import difflib
import sys

from vipr.config import apply_overrides, load_yaml


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown-option errors suggest the closest known option.

    Abbreviations are off: ``--epoch`` must not silently mean ``--epochs``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:  # the usage of the command the option was meant for, not the top level's
            self._active_subparser(parsed).error(self._unknown_message(unknown, parsed))
        return parsed

    def format_usage(self) -> str:
        _LazyHelpStore.usage_only = True  # a usage error must not import torch for the backbone list
        try:
            return super().format_usage()
        finally:
            _LazyHelpStore.usage_only = False

    def format_help(self) -> str:
        if callable(self.description):  # a help text built from the code's defaults when asked for
            self.description = self.description()
        return super().format_help()

    def _unknown_message(self, unknown: list[str], parsed) -> str:
        parser = self._active_subparser(parsed)
        options = [s for a in parser._actions for s in a.option_strings]
        first = next((u for u in unknown if u.startswith("-")), unknown[0])
        close = difflib.get_close_matches(first.split("=")[0], options, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else f"; see `{parser.prog} --help`"
        return f"unrecognized argument: {first}{hint}"

    def _active_subparser(self, parsed) -> argparse.ArgumentParser:
        parser = self
        while True:
            sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            chosen = getattr(parsed, sub.dest, None) if sub else None
            if not sub or chosen not in sub.choices:
                return parser
            parser = sub.choices[chosen]

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command's namespace its full name, ``vipr data split``, for messages."""
    parser.set_defaults(command_name=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                name_commands(sub)


class _LazyHelpStore(argparse._StoreAction):
    """A plain option whose help text ``make_help()`` builds only when help is shown."""

    def __init__(self, *args, make_help, **kwargs):
        super().__init__(*args, **kwargs)
        self.make_help = make_help

    usage_only = False  # while a usage line is formatted: argparse reads help there only to test for SUPPRESS

    help = property(lambda self: "" if _LazyHelpStore.usage_only else self.make_help(),
                    lambda self, value: None)  # argparse's own help= is unused


def add_backbone_flag(parser: argparse.ArgumentParser, lead: str = "", shown_default: str | None = None,
                      **kwargs) -> None:
    """--backbone, its help listing the backbone registry (read at --help: the registry imports torch)."""

    def text() -> str:
        from vipr.models import list_backbones

        tail = f" (default {shown_default})" if shown_default else ""
        return f"{lead}{' | '.join(list_backbones())} (any timm model, with the timm extra){tail}"

    parser.add_argument("--backbone", action=_LazyHelpStore, make_help=text, **kwargs)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def add_track_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-track", action="store_true",
                        help="do not log this run to the workspace's MLflow store (also: VIPR_TRACKING=0)")


DEVICE_HELP = ("auto | cpu | cuda | cuda:N | mps (default auto: this process's GPU when there is one, else the "
               "CPU; a device this machine lacks is refused before any work)")


def add_device_flag(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    """--device: where the command computes (vipr.engine.device.resolve_device reads it)."""
    parser.add_argument("--device", metavar="DEVICE", help=help)


def add_init_weights_flag(parser: argparse.ArgumentParser) -> None:
    """--init-weights: a weights file the backbone starts from (vipr.models.init_weights)."""
    parser.add_argument("--init-weights", metavar="FILE",
                        help="start the backbone from a weights file: a torchvision or timm state dict (.pth, .pt, "
                             ".safetensors) or a vipr checkpoint; matched, missing and unexpected keys are reported "
                             "(and written to init_weights.json in the run folder)")


def add_run_flags(parser: argparse.ArgumentParser,
                  precision_help: str = "auto | bf16 | fp16 | fp32 (default auto)") -> None:
    """The flags every training command shares; ``config_overrides`` reads them."""
    parser.add_argument("--precision", help=precision_help)
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--config", metavar="FILE", help="YAML config; flags and --set override it")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override any config key (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_overrides(args, flag_keys: dict[str, str], progress_key: str = "train.progress") -> dict:
    """One nested config dict: the --config YAML, then the flags (option name -> dotted key), then --set."""
    data = load_yaml(args.config) if args.config else {}
    flags = [f"{key}={getattr(args, name)}" for name, key in flag_keys.items() if getattr(args, name) is not None]
    if args.no_progress:
        flags.append(f"{progress_key}=false")
    return apply_overrides(data, flags + list(args.set))
