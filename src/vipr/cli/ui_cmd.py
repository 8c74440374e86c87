"""``vipr ui``: the MLflow web UI on the workspace's runs and registered models."""

from __future__ import annotations

import argparse
import os
import sys

from vipr.cli.options import UiOptions

HELP = """Browse tracked runs, metrics and registered models in the MLflow UI.

Serves the local workspace (./.vipr or $VIPR_HOME) on http://HOST:PORT until Ctrl-C.
With $VIPR_TRACKING_URI (or $MLFLOW_TRACKING_URI) set to a tracking server, open that
server's own UI instead; set to a database URL, the UI runs here on that database."""


def add_parser(sub) -> None:
    p = sub.add_parser("ui", help="browse runs and models (MLflow UI)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help=f"port (default {UiOptions.port})")
    p.set_defaults(run=run)


def ui_command(workspace, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for ``workspace``."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", workspace.tracking_uri,
           "--host", host, "--port", str(port)]
    if workspace.artifact_root:
        cmd += ["--default-artifact-root", workspace.artifact_root]
    return cmd


def run(args) -> int:
    from vipr.cli.options import read_options
    from vipr.cli.serve_cmd import check_port_free
    from vipr.platform import workspace

    args.port = read_options(UiOptions, args).port

    ws = workspace.current()
    if ws.tracking_uri.startswith(("http://", "https://")):
        print(f"runs and models are on the tracking server {ws.tracking_uri}: open it in a browser "
              f"(unset VIPR_TRACKING_URI / MLFLOW_TRACKING_URI to browse the local workspace)")
        return 0
    check_port_free(args.host, args.port)  # before saying where the UI is
    workspace.client(ws)  # creates the store on first use, quietly, before MLflow's server would
    print(f"MLflow UI for {ws.describe()} on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    cmd = ui_command(ws, args.host, args.port)
    # MLflow 3's server also starts seven job-runner processes for its GenAI features; browsing needs none.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(cmd[0], cmd)  # the server replaces this process: Ctrl-C and SIGTERM reach it directly
