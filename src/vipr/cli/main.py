"""The ``vipr`` command: pre-train, evaluate, inspect data, register, export and serve models, the quickstart tour."""

from __future__ import annotations

import argparse
import sys

from vipr import __version__
from vipr.cli import data_cmd, eval_cmd, model_cmd, nas_cmd, pretrain_cmd, quickstart_cmd, serve_cmd, ui_cmd
from vipr.cli.parser import Parser
from vipr.errors import Interrupted, ViprError

COMMANDS = (pretrain_cmd, eval_cmd, data_cmd, model_cmd, serve_cmd, ui_cmd, quickstart_cmd, nas_cmd)


def build_parser() -> Parser:
    parser = Parser(prog="vipr", description="vipr: visual pre-training on unlabeled images, evaluation and transfer.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vipr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-launch under torchrun
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except ViprError as err:
        print(f"vipr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # the checkpoint is saved; --resume continues
        print(f"vipr {args.command}: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"vipr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
