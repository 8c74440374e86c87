"""One attempt of a local job: its command line, its environment, what it needs, what it left behind.

The command is the spec's, run with this Python (``python -m vipr.cli.main``, so the worker's vipr
is the job's), in the folder it was submitted from. vipr's training commands start torchrun
themselves, so ``processes_per_node`` > 1 becomes ``--nproc-per-node N``; a retried attempt of a
resumable command continues its run folder with ``--resume`` once that holds a checkpoint.

Threads: each process gets ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = its whole cores (at least 1):
torch sizes its intra-op pool from them, so jobs sharing a machine do not oversubscribe its cores.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from vipr.errors import ConfigError
from vipr.jobs.kube import parse_quantity
from vipr.jobs.spec import JobSpec, check_arguments, command_name, resumable
from vipr.platform import db
from vipr.platform.workspace import ENV_HOME

CHECKPOINT = "checkpoint.pt"  # what a resumable command writes into its run folder
MARKER = "mlflow_run.json"  # vipr.platform.tracking.MARKER, named here: that module imports torch (seconds)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def attempt_words(spec: JobSpec, attempt: int, run_dir: Path) -> list[str]:
    """The vipr command line of attempt number ``attempt`` (1 = the first)."""
    words = list(spec.command)
    if spec.resources.processes_per_node > 1:
        words += ["--nproc-per-node", str(spec.resources.processes_per_node)]
    if attempt > 1 and resumable(spec) and (run_dir / CHECKPOINT).is_file():
        words.append("--resume")
    return words


def python_argv(words: list[str]) -> list[str]:
    """``vipr ARGS`` as this interpreter's ``python -m vipr.cli.main ARGS``."""
    return [sys.executable, "-m", "vipr.cli.main", *words[1:]]


def threads(spec: JobSpec) -> int:
    """Intra-op threads of one process: its whole cores, at least one."""
    return max(1, int(spec.resources.cpu))


def attempt_env(spec: JobSpec, job_id: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment, its workspace, the spec's ``env``, then the job's threads and identity."""
    env = {**(os.environ if base is None else base), ENV_HOME: str(db.home()), "PYTHONUNBUFFERED": "1"}
    env.update(spec.env)
    env.update({name: str(threads(spec)) for name in THREAD_VARS})
    env.update({"VIPR_JOB_ID": job_id, "VIPR_JOB_NAME": spec.name})
    return env


def needs(spec: JobSpec) -> tuple[float, float]:
    """(cores, bytes) the job holds while it runs: cpu per process times processes, and its memory."""
    r = spec.resources
    return r.cpu * r.processes_per_node, parse_quantity(r.memory)


def check_local(spec: JobSpec) -> None:
    """ConfigError unless this machine's queue can run ``spec``: one node, and a command that launches its
    own processes when it needs several."""
    r = spec.resources
    if r.nodes > 1:
        raise ConfigError(f"resources.nodes is {r.nodes}, but the local queue runs a job on this one machine; "
                          f"set resources.nodes=1, or submit it with --backend volcano")
    if r.processes_per_node > 1:
        try:
            check_arguments(attempt_words(spec, 1, Path(spec.outputs.run_dir)))
        except ConfigError:
            words = " ".join(command_name(spec.command) or ())
            raise ConfigError(f"vipr {words} takes no --nproc-per-node, so the local queue cannot start its "
                              f"{r.processes_per_node} processes; set resources.processes_per_node=1, or submit "
                              f"it with --backend volcano (torchrun in each pod)") from None


def tracking_run_id(run_dir: Path, env: Mapping[str, str]) -> str | None:
    """The MLflow run id the command recorded in RUN_DIR/mlflow_run.json for the job's tracking store."""
    from vipr.platform.workspace import current

    try:
        marker = json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    entry = marker.get(current(env).tracking_uri) if isinstance(marker, dict) else None
    return entry.get("run_id") if isinstance(entry, dict) else None


def register_run(run_dir: Path, name: str, alias: str | None, env: Mapping[str, str]) -> str:
    """Register the run folder's checkpoint in the job's workspace; ``NAME/VERSION``."""
    from vipr.platform import registry, workspace

    record = registry.register(run_dir, name, alias, mlflow_client=workspace.client(workspace.current(env)))
    return f"{record['name']}/{record['version']}"
