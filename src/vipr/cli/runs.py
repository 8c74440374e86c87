"""The end of a command's run: its plots, and the tracking of runs that end badly.

A finished run is logged by ``vipr.platform.tracking.track_run`` as FINISHED; a command that
stops inside a run folder it wrote logs that folder with the status the run ended in, so the
MLflow UI shows failed and interrupted runs too. Nothing is logged for a command that failed
before it wrote its run folder (a bad option, a missing data path). Either way the run folder
gets its curves (vipr.plots: RUN/plots/*.png) first, once the run has ended or stopped.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from vipr.errors import Interrupted

RUN_FILES = ("config.yaml", "eval_config.json")  # written when a run starts (pretrain) or ends (eval)


@contextmanager
def tracked(out: str | Path | None, kind: str, no_track: bool):
    """Plot the run folder ``out`` when the block ends; log it as FAILED or KILLED when it raises, then re-raise."""
    started = time.time()
    try:
        yield
    except (Interrupted, KeyboardInterrupt):
        _log_ended(out, kind, no_track, "KILLED", started)
        raise
    except Exception:
        _log_ended(out, kind, no_track, "FAILED", started)
        raise
    _plot(out)


def _log_ended(out: str | Path | None, kind: str, no_track: bool, status: str, started: float) -> None:
    _plot(out)  # a stopped run's curves too (a resumed one's config.yaml is older than this command)
    if out is None or not _written_since(Path(out), started):
        return
    from vipr.engine import distributed as dist
    from vipr.platform.tracking import track_run

    if dist.is_main():
        track_run(out, kind, no_track, status=status)


def _plot(out: str | Path | None) -> None:
    """Draw the curves of run folder ``out`` (vipr.plots), on the main process."""
    from vipr.engine import distributed as dist

    if out is None or not (Path(out) / "metrics.jsonl").is_file() or not dist.is_main():
        return
    from vipr.plots import write_run_plots

    write_run_plots(out)


def _written_since(folder: Path, started: float) -> bool:
    """Whether this command wrote the folder's run record (not a run from before it, e.g. a refused --resume)."""
    return any((folder / name).is_file() and (folder / name).stat().st_mtime >= started - 1 for name in RUN_FILES)
