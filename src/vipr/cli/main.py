"""The ``vipr`` command: pre-train, evaluate, inspect data, register, export and serve models, the quickstart tour.

Exit status: 0 success, 1 bad input (a vipr error: the message names it and the fix), 2 usage
(argparse: unknown option, missing argument), 130 interrupted (Ctrl-C / SIGTERM; the run's
checkpoint is saved). Errors and warnings are one line on stderr, prefixed with the command
(``vipr data split: error: ...``); no traceback for anything the user can fix.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager

from vipr import __version__
from vipr.cli import (data_cmd, eval_cmd, features_cmd, model_cmd, nas_cmd, pretrain_cmd, quickstart_cmd, serve_cmd,
                      transfer_cmd, ui_cmd)
from vipr.cli import config_cmd, distill_cmd, runs_cmd
from vipr.cli import job_cmd, version_cmd, worker_cmd
from vipr.cli.parser import Parser, name_commands
from vipr.errors import Interrupted, ViprError

COMMANDS = (pretrain_cmd, eval_cmd, features_cmd, transfer_cmd, data_cmd, model_cmd, serve_cmd, ui_cmd, quickstart_cmd,
            nas_cmd, runs_cmd, config_cmd, distill_cmd, job_cmd, worker_cmd, version_cmd)
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> Parser:
    parser = Parser(prog="vipr", description="vipr: visual pre-training on unlabeled images, evaluation and transfer.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vipr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.add_parser(sub)
    name_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-launch under torchrun
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_OK
    name = args.command_name
    with one_line_warnings(name):
        try:
            return args.run(args) or EXIT_OK
        except ViprError as err:
            return _fail(name, f"error: {err}", EXIT_BAD_INPUT)
        except Interrupted as stop:  # the checkpoint is saved; --resume continues
            return _fail(name, str(stop), EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            return _fail(name, "interrupted", EXIT_INTERRUPTED)
        except OSError as err:  # a path the checks before the work could not foresee (a disk that filled up)
            return _fail(name, f"error: {describe_os_error(err)}", EXIT_BAD_INPUT)


def _fail(name: str, message: str, code: int) -> int:
    print(f"{name}: {message}", file=sys.stderr)
    return code


def describe_os_error(err: OSError) -> str:
    """``Permission denied: runs/x/config.yaml; check the path ...`` from an OSError."""
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{where}; check the path, its permissions and the free space"


@contextmanager
def one_line_warnings(name: str):
    """Warnings as ``vipr eval knn: warning: ...`` on one line (not file:line plus the source line)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{name}: warning: {message}", file=sys.stderr if file is None else file)

    previous, warnings.showwarning = warnings.showwarning, show
    try:
        yield
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
