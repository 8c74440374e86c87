"""Run folders: every run keeps its resolved config, code version, environment and metrics."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

import vipr
from vipr.config import to_dict
from vipr.engine import distributed as dist
from vipr.errors import ViprError
from vipr.fsutil import atomic_write_text

ENV_JOB_ID, ENV_JOB_NAME = "VIPR_JOB_ID", "VIPR_JOB_NAME"  # set by the job worker on every job it runs


def check_run_dir(out: str | Path, resume: bool, checkpoint_name: str) -> None:
    """ViprError unless ``out`` suits the run: a checkpoint to continue with --resume, none without it.
    Commands call it before opening their data, so a wrong --out fails before a long store build, and
    prepare_run_dir after, so a wrong --data leaves no run folder behind."""
    out = Path(out)
    has_checkpoint = (out / checkpoint_name).is_file()
    if resume and not has_checkpoint:
        raise ViprError(f"--resume: no {checkpoint_name} in {out}; drop --resume to start a new run there")
    if not resume and has_checkpoint:
        raise ViprError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")


def prepare_run_dir(out: str | Path, config: Any, resume: bool, checkpoint_name: str) -> Path:
    """Create ``out`` (or check it for --resume) and write config.yaml and env.json into it."""
    out = Path(out)
    check_run_dir(out, resume, checkpoint_name)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not resume:  # a resume keeps the folder's config.yaml: it must match the checkpoint, checked after
            write_config(out, config)
        write_environment(out)
    dist.barrier()
    return out


def environment() -> dict:
    """Versions, host, code revision, command line and the job (None outside one), for reproducing a run."""
    return {
        "vipr": vipr.__version__, "git": _git_revision(), "python": sys.version.split()[0],
        "torch": torch.__version__, "platform": platform.platform(), "processor": cpu_name(),
        "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": dist.world_size(), "argv": sys.argv, "job": job_from_env(),
    }


def job_from_env() -> dict | None:
    """``{"id", "name"}`` of the job running this process (the job worker sets VIPR_JOB_ID / VIPR_JOB_NAME), or None."""
    job = {"id": os.environ.get(ENV_JOB_ID) or None, "name": os.environ.get(ENV_JOB_NAME) or None}
    return job if any(job.values()) else None


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str | None:
    try:
        root = Path(vipr.__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_config(out: str | Path, config: Any) -> None:
    """config.yaml: the resolved config (a dataclass or a plain dict), in the order its fields are declared."""
    atomic_write_text(Path(out) / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))


def write_environment(out: str | Path) -> None:
    """env.json: versions, host, code revision and argv (``environment``)."""
    atomic_write_text(Path(out) / "env.json", json.dumps(environment(), indent=2))


def write_metrics(out: Path, metrics: dict) -> None:
    """metrics.json: the run's final measurements (DESIGN.md: every measuring command writes it)."""
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
