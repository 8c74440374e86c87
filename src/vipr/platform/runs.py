"""Past runs of the workspace, read back from its MLflow store: the data behind ``vipr runs``.

Every tracked run (pre-training, evaluation, NAS search and training, alike) is an MLflow run
tagged with its ``kind`` and ``run_dir`` (vipr.platform.tracking). Here they are listed
newest first, looked up by id, id prefix, run name (the folder's name) or run folder, and
summarised as plain records for tables and JSON.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

from vipr.errors import ViprError
from vipr.platform import workspace

# the figure a run is judged by, the first its metrics hold: evaluation scores, NAS accuracies,
# the kNN probe of pre-training, transfer's mask AP, box AP or mIoU, then its loss
KEY_METRICS = ("top1", "accuracy", "test_top1", "val_acc", "knn_best_top1", "knn_top1", "segm_AP", "bbox_AP", "mIoU",
               "loss_mean", "loss")
SKIPPED_EXPERIMENTS = ("checkpoints",)  # runs made for a bare checkpoint file, not by a command
MIN_PREFIX = 4  # characters of a run id that may stand for it
NEWEST_FIRST = ["attributes.start_time DESC", "attributes.end_time DESC"]  # a resumed run: same start, later end


@dataclass(frozen=True)
class RunSummary:
    """One row of ``vipr runs list``."""

    id: str
    name: str
    kind: str
    command: str
    status: str
    started: float | None  # seconds since the epoch
    duration_s: float | None
    metric: str | None  # the key metric's name, and its value
    value: float | None
    run_dir: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def search(mlflow_client=None, kind: str | None = None, limit: int | None = None) -> list:
    """The workspace's runs (MLflow ``Run`` objects), newest first; ``kind``: a kind or its prefix (``eval``)."""
    client = mlflow_client or workspace.client()
    ids = [e.experiment_id for e in client.search_experiments() if e.name not in SKIPPED_EXPERIMENTS]
    if not ids:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(ids, order_by=NEWEST_FIRST, max_results=1000, page_token=token)
        runs += [r for r in page if _kind_matches(r.data.tags.get("kind", ""), kind)]
        token = page.token
        if not token or (limit and len(runs) >= limit):
            return runs[:limit] if limit else runs


def summarise(run) -> RunSummary:
    info, tags = run.info, run.data.tags
    metric = next((m for m in KEY_METRICS if m in run.data.metrics), None)
    kind = tags.get("kind", "run")
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return RunSummary(id=info.run_id, name=info.run_name or "", kind=kind,
                      command=tags.get("command") or f"vipr {kind.replace('-', ' ')}", status=info.status,
                      started=info.start_time / 1000 if info.start_time else None, duration_s=duration,
                      metric=metric, value=run.data.metrics.get(metric) if metric else None,
                      run_dir=tags.get("run_dir"))


def details(run, mlflow_client=None) -> dict:
    """Everything ``vipr runs show`` prints: the summary, params, final metrics, tags, artifacts, folder files."""
    client = mlflow_client or workspace.client()
    folder = Path(run.data.tags["run_dir"]) if run.data.tags.get("run_dir") else None
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder and folder.is_dir() \
        else []
    return {**summarise(run).to_dict(), "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
            "tags": {k: v for k, v in sorted(run.data.tags.items()) if not k.startswith("mlflow.")},
            "artifacts": _artifacts(client, run.info.run_id), "files": files}


def find(ref: str, mlflow_client=None) -> object:
    """The run ``ref`` names: a run id, a unique id prefix, a run name or a run folder; else a ViprError."""
    client = mlflow_client or workspace.client()
    runs = search(client)
    folder = str(Path(ref).expanduser().resolve()) if Path(ref).expanduser().exists() else None
    for matches in ([r for r in runs if r.info.run_id == ref],
                    [r for r in runs if folder and r.data.tags.get("run_dir") == folder],
                    [r for r in runs if len(ref) >= MIN_PREFIX and r.info.run_id.startswith(ref)],
                    [r for r in runs if r.info.run_name == ref]):
        if matches and len({r.data.tags.get("run_dir") for r in matches}) == 1:
            return matches[0]  # one folder logged twice (stopped, then resumed): its newest run
        if matches:
            raise ViprError(f"run '{ref}' is ambiguous: {len(matches)} runs match ("
                            f"{', '.join(_label(r) for r in matches[:5])}); pass the full run id")
    raise ViprError(f"no run '{ref}' in {workspace.current().describe()}{_suggest(ref, runs)}; "
                    f"list the runs with `vipr runs list`")


def _suggest(ref: str, runs: list) -> str:
    names = {r.info.run_id[:8]: r for r in runs} | {r.info.run_name: r for r in runs if r.info.run_name}
    close = difflib.get_close_matches(ref, list(names), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(_label(names[c]) for c in close)}?)" if close else ""


def _label(run) -> str:
    return f"{run.info.run_id[:8]} {run.info.run_name} ({run.data.tags.get('kind', 'run')})"


def _kind_matches(kind: str, wanted: str | None) -> bool:
    return wanted is None or kind == wanted or kind.split("-")[0] == wanted


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    """Artifact paths of the run, recursively (an unreachable artifact store gives none)."""
    try:
        entries = client.list_artifacts(run_id, path)
    except Exception:  # MlflowException, OSError: the listing is a convenience
        return []
    out = []
    for entry in entries:
        out += _artifacts(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return out
