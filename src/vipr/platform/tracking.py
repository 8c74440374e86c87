"""Run tracking: log a finished vipr run folder into the workspace's MLflow store, after the fact.

Training code knows nothing of MLflow: a run folder already holds all that a tracking
server shows, so logging is a copy made once the run has ended.

    config.yaml | eval_config.json  -> params (flattened: ``optim.lr``) and an artifact
    metrics.jsonl                   -> metric history: per step, per epoch as ``epoch_*``
    metrics.json                    -> final metrics, at the last step
    checkpoint.pt | classifier.pt   -> tags from its model card (dataset digest, config hash, ...) and the
                                       registered dataset version (vipr.platform.provenance)
    env.json                        -> tags (vipr version, git revision, the command line, the job)
    plots/*.png                     -> artifacts (vipr.plots)

Every write goes through ``MlflowClient.log_batch``, MLflow's one write primitive. The run
id is remembered per tracking URI in RUN_DIR/mlflow_run.json, so ``vipr model register``
reuses the run instead of logging the folder twice.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
import warnings
from pathlib import Path

import yaml

from vipr.engine import checkpoint
from vipr.engine.card import DENSE_TASKS, ModelCard
from vipr.errors import CheckpointError, ViprError
from vipr.fsutil import atomic_write_text, file_sha256
from vipr.platform import workspace
from vipr.platform.provenance import provenance_tags

MARKER = "mlflow_run.json"
ENV_SWITCH = "VIPR_TRACKING"  # "0" turns the automatic logging of `vipr pretrain` / `vipr eval` off
CHECKPOINT_NAMES = ("checkpoint.pt", "classifier.pt")
_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's per-call maxima
_MAX_PARAM_CHARS = 6000


def log_run_folder(run_dir: str | os.PathLike, kind: str | None = None, mlflow_client=None,
                   status: str | None = None) -> str:
    """Log the run folder ``run_dir`` as a new MLflow run; returns its run id.

    ``kind`` labels the run (``pretrain``, ``eval-linear``, ...; default: read from the
    folder) and picks the experiment (the part before ``-``).
    """
    folder = Path(run_dir)
    config_file, params = read_config(folder)
    kind = kind or _folder_kind(config_file, params)
    card = checkpoint_card(_folder_checkpoint(folder))
    client = mlflow_client or workspace.client()
    run_id = client.create_run(workspace.experiment_id(client, kind.split("-")[0]), start_time=_mtime_ms(config_file),
                               run_name=folder.name).info.run_id
    log_all(client, run_id, metrics=_folder_metrics(folder), params=params, tags=_folder_tags(folder, kind, card))
    _log_dataset(client, run_id, card, params.get("data.source") or params.get("data"), kind)
    for name in (config_file.name, "metrics.json", "env.json"):
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name), artifact_path="run")
    if (folder / "plots").is_dir():  # vipr.plots: curves, confusion matrix
        client.log_artifacts(run_id, str(folder / "plots"), artifact_path="plots")
    final_file = folder / "metrics.json"
    status = status or ("FINISHED" if final_file.is_file() else "KILLED")  # FAILED / KILLED: the CLI saw it end
    client.set_terminated(run_id, status, end_time=_mtime_ms(final_file))
    _remember(folder, client.tracking_uri, run_id)
    return run_id


def ensure_logged(run_dir: str | os.PathLike, mlflow_client=None) -> str:
    """The run id of ``run_dir`` in this store: the remembered one while still current, else a new log."""
    folder, client = Path(run_dir), mlflow_client or workspace.client()
    entry = _read_marker(folder).get(client.tracking_uri, {})
    if entry.get("metrics_sha256") == _metrics_sha256(folder) and _run_is_live(client, entry.get("run_id")):
        return entry["run_id"]
    return log_run_folder(folder, mlflow_client=client)


def log_checkpoint(path: str | os.PathLike, sha256: str, mlflow_client=None) -> str:
    """A run for a checkpoint file outside any run folder (experiment ``checkpoints``), one per content."""
    client, path = mlflow_client or workspace.client(), Path(path)
    exp = workspace.experiment_id(client, "checkpoints")
    found = client.search_runs([exp], f"tags.checkpoint_sha256 = '{sha256}'", max_results=1)
    if found and found[0].info.lifecycle_stage == "active":
        return found[0].info.run_id
    card = checkpoint_card(path)
    run_id = client.create_run(exp, start_time=_mtime_ms(path), run_name=path.stem).info.run_id
    tags = {**meta_tags(card), **provenance_tags(card), "kind": "checkpoint", "checkpoint": str(path.resolve()),
            "checkpoint_sha256": sha256}
    log_all(client, run_id, metrics=_metrics(card.evaluation if card else {}, 0, _mtime_ms(path)),
            params=flatten(card.config if card else {}), tags=tags)
    _log_dataset(client, run_id, card, None, "checkpoint")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def enabled(no_track: bool = False) -> bool:
    """Whether the CLI logs its runs: not with --no-track, nor with VIPR_TRACKING=0."""
    return not no_track and os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def default_run_folder(kind: str, no_track: bool = False) -> Path | None:
    """A new run folder in the workspace for a command given no --out (``eval-knn-20260102-130405-1a2b``),
    so its run is tracked with the files ``vipr runs show`` lists; None when tracking is off."""
    if not enabled(no_track):
        return None
    root = workspace.runs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root} is not writable")
    except OSError as err:  # tracking is a convenience: the command still runs, untracked
        warnings.warn(f"this run is not tracked: no run folder can be made in {root} ({err}); pass --out DIR, "
                      f"or set {workspace.ENV_HOME} to a writable folder", stacklevel=2)
        return None
    return root / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def track_run(run_dir: str | os.PathLike, kind: str, no_track: bool = False, status: str | None = None) -> str | None:
    """The CLI's hook: log ``run_dir`` unless switched off; a failure warns and never fails the command.

    ``status``: FAILED after an error, KILLED after an interruption (default: FINISHED when metrics.json exists)."""
    if not enabled(no_track):
        return None
    try:
        run_id = log_run_folder(run_dir, kind, status=status)
    except Exception as err:  # tracking is a convenience: the run folder already holds everything
        print(f"vipr: warning: run {run_dir} was not tracked ({type(err).__name__}: {err}); the run folder is "
              f"complete, log it later with `vipr model register`, or pass --no-track / set {ENV_SWITCH}=0",
              file=sys.stderr)
        return None
    print(f"tracked as MLflow run {run_id} in {workspace.current().describe()} (browse: vipr ui)", file=sys.stderr)
    return run_id


def log_all(client, run_id: str, *, metrics=(), params: dict | None = None, tags: dict | None = None) -> None:
    """``log_batch`` in chunks within MLflow's per-call limits; None-valued tags are dropped."""
    from mlflow.entities import Param, RunTag

    params = [Param(k, v[:_MAX_PARAM_CHARS]) for k, v in (params or {}).items()]
    tags = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None]
    metrics = list(metrics)
    while metrics or params or tags:
        client.log_batch(run_id, metrics=metrics[:_BATCH_LIMITS["metrics"]], params=params[:_BATCH_LIMITS["params"]],
                         tags=tags[:_BATCH_LIMITS["tags"]])
        metrics, params, tags = (metrics[_BATCH_LIMITS["metrics"]:], params[_BATCH_LIMITS["params"]:],
                                 tags[_BATCH_LIMITS["tags"]:])


def read_config(folder: Path) -> tuple[Path, dict[str, str]]:
    """The folder's resolved config file and its values flattened to MLflow params."""
    if (folder / "eval_config.json").is_file():  # an evaluation's folder also holds its config.yaml (vipr eval)
        return folder / "eval_config.json", flatten(json.loads((folder / "eval_config.json").read_text()))
    if (folder / "config.yaml").is_file():
        return folder / "config.yaml", flatten(yaml.safe_load((folder / "config.yaml").read_text()) or {})
    raise ViprError(f"{folder} is not a vipr run folder (no config.yaml or eval_config.json); pass a folder "
                    f"written by `vipr pretrain --out` or `vipr eval ... --out`, or a checkpoint file")


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 0.3}}`` -> ``{"optim.lr": "0.3"}``; non-strings as JSON (``null``, ``true``)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def meta_tags(card: ModelCard | None) -> dict:
    """The card's fields a model version or run is tagged with (tag names as in vipr 0.1: ``backbone``; a transfer
    model's ``backbone`` is the vipr backbone under its heads, ``architecture`` its kind)."""
    if card is None:
        return {}
    dense = card.task in DENSE_TASKS  # a transfer model: its kind, and the vipr backbone under its heads
    tags = {"dataset": card.dataset, "dataset_digest": card.dataset_digest, "config_hash": card.config_hash,
            "backbone": card.architecture_kwargs["backbone"] if dense else card.architecture,
            "architecture": card.architecture if dense else None, "task": card.task,
            "method": card.method, "image_size": card.image_size,
            "num_classes": card.num_classes, "parent_checkpoint": card.parent.checkpoint if card.parent else None,
            "label_split": card.label_split, "vipr_version": card.vipr_version}
    return {key: value for key, value in tags.items() if value is not None}


def checkpoint_card(path: Path | None) -> ModelCard | None:
    """A checkpoint's card without reading its tensors into memory; None when absent, unreadable or unsafe."""
    if path is None or not path.is_file():
        return None
    try:
        return checkpoint.load_card(path)
    except CheckpointError:  # tracking tolerates a damaged checkpoint; registering one fails on its own load
        return None


def _folder_metrics(folder: Path) -> list:
    """metrics.jsonl as history, then metrics.json at the last step and later (so it shows as the latest)."""
    final_file = folder / "metrics.json"
    final = json.loads(final_file.read_text()) if final_file.is_file() else {}
    history = _read_jsonl(folder / "metrics.jsonl")
    last_step = int(final.get("steps") or max((r.get("step", 0) for r in history), default=0))
    return (_history_metrics(history, _mtime_ms(folder / "metrics.jsonl"))
            + _metrics(final, last_step, _mtime_ms(final_file) + 1))


def _folder_tags(folder: Path, kind: str, card: ModelCard | None) -> dict:
    env = json.loads((folder / "env.json").read_text()) if (folder / "env.json").is_file() else {}
    return {**meta_tags(card), **provenance_tags(card, env), "kind": kind, "run_dir": str(folder.resolve()),
            "command": _command(env.get("argv")),
            "vipr_version": env.get("vipr") or (card.vipr_version if card else None), "git": env.get("git")}


def _command(argv: list[str] | None) -> str | None:
    """The command line that made the run (env.json's argv), as ``vipr pretrain --epochs 10 ...``."""
    if not argv:
        return None
    program = Path(argv[0]).name
    is_vipr = program == "vipr" or Path(argv[0]).parts[-3:] == ("vipr", "cli", "main.py")  # python -m / torchrun
    return shlex.join(["vipr", *argv[1:]] if is_vipr else argv)


def _folder_kind(config_file: Path, params: dict) -> str:
    """``pretrain``, ``nas-search``, ``nas-train``, ``transfer-TASK`` or ``eval-KIND``, from the folder's config."""
    if config_file.name != "config.yaml":
        return f"eval-{params.get('kind', 'run')}"
    if "strategy.name" in params:
        return "nas-search"
    if "input.checkpoint" in params and "task" in params:
        return f"transfer-{params['task']}"
    trains_genotype = "network.genotype" in params or "genotype" in params  # runs written before nas train was sectioned: flat keys
    return "nas-train" if trains_genotype else "pretrain"


def _folder_checkpoint(folder: Path) -> Path | None:
    return next((folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()), None)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _history_metrics(records: list[dict], timestamp: int) -> list:
    """Step records at their step; epoch summaries (they carry ``epoch_seconds``) as ``epoch_*`` at the epoch."""
    metrics = []
    for record in records:
        per_epoch = "epoch_seconds" in record
        step = int(record.get("epoch" if per_epoch else "step", 0))
        values = {k: v for k, v in record.items() if k not in ("step", "epoch")}
        if per_epoch:
            values = {k if k.startswith("epoch_") else f"epoch_{k}": v for k, v in values.items()}
        metrics += _metrics(values, step, timestamp)
    return metrics


def _metrics(values: dict, step: int, timestamp: int) -> list:
    from mlflow.entities import Metric

    return [Metric(k, float(v), timestamp, step) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _log_dataset(client, run_id: str, card: ModelCard | None, source: str | None, kind: str) -> None:
    """Record the data as an MLflow dataset input (name + content digest): lineage from data to run."""
    if card is None or not card.dataset_digest:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=card.dataset or "dataset", digest=card.dataset_digest[:36],  # MLflow's maximum length
                      source_type="vipr", source=json.dumps({"source": source or card.dataset}))
    context = "train" if kind == "pretrain" else "eval"
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])


def _mtime_ms(path: Path) -> int:
    return int((path.stat().st_mtime if path.is_file() else time.time()) * 1000)


def _metrics_sha256(folder: Path) -> str | None:
    return file_sha256(folder / "metrics.json") if (folder / "metrics.json").is_file() else None


def _read_marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _remember(folder: Path, uri: str, run_id: str) -> None:
    """Write {tracking URI: run id + metrics.json digest} beside the run (best effort: folders may be read-only)."""
    marker = _read_marker(folder)
    marker[uri] = {"run_id": run_id, "metrics_sha256": _metrics_sha256(folder)}
    try:
        atomic_write_text(folder / MARKER, json.dumps(marker, indent=2))
    except OSError:
        pass


def _run_is_live(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # MlflowException: the run was deleted or belongs to another store
        return False
