"""Model registry: named, versioned checkpoints with aliases and lineage, in the workspace's MLflow store.

A version is a checkpoint logged as an artifact (``model/<file>.pt``) of the MLflow run of
the folder it came from (logged first if it was not). Pre-training checkpoints are
registered without their resume state (optimizer, queue, RNG): the run folder keeps that.
Every version carries tags:

    checkpoint_sha256          content of the registered file: how a child finds its parent
    task                       the card's: backbone | classifier | detect | instance | segment
    backbone                   the vipr backbone (of a transfer model: the one under its heads)
    architecture               transfer models: the kind (faster_rcnn, mask_rcnn, retinanet, fcn, aspp)
    dataset, dataset_digest    the data it was trained on
    dataset_name               that data's registered dataset version, when it is one, and
    dataset_version            its number (V2) (vipr.platform.provenance)
    job_id, job_name           the job that made the run, when a job did
    run_dir, config_hash       where and with what settings
    parent_checkpoint          classifiers and transfer models: the pre-trained checkpoint they started from
    parent_model               NAME/VERSION of that parent, when it is registered

References: ``NAME`` (its latest version), ``NAME/VERSION``, ``NAME@ALIAS``, each optionally
prefixed by ``models:/``. Aliases are MLflow's (``models:/name@alias``); stages are not used.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

from vipr.engine import checkpoint
from vipr.errors import CheckpointError, ConfigError, RegistryError
from vipr.fsutil import cache_root, file_sha256
from vipr.platform import tracking, workspace
from vipr.platform.lineage import find_by_sha256, lineage_tags, orphaned_by_deleting
from vipr.platform.provenance import provenance_tags, run_env

ARTIFACT_PATH = "model"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@']+?)(?:/(?P<version>\d+)|@(?P<alias>[^/@']+))?$")


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME``, ``NAME/VERSION`` or ``NAME@ALIAS`` (``models:/`` optional) -> (name, version, alias)."""
    match = _REF.match(ref.strip())
    if not match:
        raise RegistryError(f"'{ref}' is not a model reference; use NAME, NAME/VERSION or NAME@ALIAS (e.g. shapes-moco/2)")
    return match["name"], match["version"], match["alias"]


def register(target: str | os.PathLike, name: str, alias: str | None = None, mlflow_client=None) -> dict:
    """Register the checkpoint of run folder (or .pt file) ``target`` as a new version of ``name``."""
    if not _NAME.match(name):
        raise RegistryError(f"model name '{name}' is not allowed: use letters, digits, '.', '_' and '-' "
                            f"(no '/' or '@': they separate versions and aliases)")
    client = mlflow_client or workspace.client()
    ckpt_path, run_dir = _locate(Path(target))
    ckpt = checkpoint.load(ckpt_path)  # format 1 comes back migrated (a stripped copy is written as format 2)
    card = checkpoint.read_card(ckpt, ckpt_path)
    sha = file_sha256(ckpt_path)
    run_id = tracking.ensure_logged(run_dir, client) if run_dir else tracking.log_checkpoint(ckpt_path, sha, client)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(_artifact_file(ckpt, ckpt_path, Path(tmp))), artifact_path=ARTIFACT_PATH)
    if not _exists(client, name):
        client.create_registered_model(name, description="vipr model")
    tags = {**tracking.meta_tags(card), **provenance_tags(card, run_env(run_dir)), **lineage_tags(card, client),
            "checkpoint_sha256": sha,
            "checkpoint": str(ckpt_path.resolve()), "run_dir": str(run_dir.resolve()) if run_dir else None}
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id,
                                          tags={k: str(v) for k, v in tags.items() if v is not None})
    if alias:
        set_alias(name, version.version, alias, client)
    return show(f"{name}/{version.version}", client)


def get_version(ref: str, mlflow_client=None):
    """The MLflow ``ModelVersion`` that ``ref`` names; a RegistryError listing what exists otherwise."""
    client = mlflow_client or workspace.client()
    name, version, alias = parse_ref(ref)
    model = _model(client, name)
    if alias:
        if alias not in model.aliases:
            known = ", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items())) or "none"
            raise RegistryError(f"model '{name}' has no alias '{alias}'; its aliases: {known} "
                                f"(set one: vipr model alias {name} VERSION {alias})")
        return client.get_model_version_by_alias(name, alias)
    versions = _versions(client, name)
    if not versions:
        raise RegistryError(f"model '{name}' has no versions left; register one: vipr model register RUN_DIR --name {name}")
    if version is not None and all(str(v.version) != version for v in versions):
        raise RegistryError(f"model '{name}' has no version {version}; its versions: "
                            f"{', '.join(str(v.version) for v in versions)}")
    return client.get_model_version(name, version or str(versions[-1].version))  # searches leave aliases out


def show(ref: str, mlflow_client=None) -> dict:
    """A version's record: tags, aliases, the producing run's metrics, its parent and derived versions."""
    client = mlflow_client or workspace.client()
    version = get_version(ref, client)
    record = version_record(version)
    record["task"], record["output"] = task_of(version), _output(version)
    try:
        run = client.get_run(version.run_id)
        record["metrics"], record["run_name"] = dict(run.data.metrics), run.info.run_name
    except Exception:  # the run was deleted from the tracking store; the version still stands
        record["metrics"], record["run_name"] = {}, None
    record["parent_model"] = _parent(client, record["tags"])
    sha = record["tags"].get("checkpoint_sha256")
    derived = client.search_model_versions(f"tags.parent_checkpoint_sha256 = '{sha}'") if sha else []
    record["derived"] = sorted(f"{v.name}/{v.version}" for v in derived)
    aliases = client.get_registered_model(version.name).aliases
    record["versions"] = [{"version": int(v.version), "aliases": sorted(a for a, n in aliases.items() if str(n) == str(v.version))}
                          for v in _versions(client, version.name)]
    return record


def list_models(mlflow_client=None) -> list[dict]:
    """One row per registered model with at least one version: versions, latest, aliases, task, backbone, update.

    A name whose versions are all gone (left by an older vipr, or by a registration that failed
    half-way) is not listed: nothing can be loaded from it.
    """
    client = mlflow_client or workspace.client()
    rows = []
    for model in sorted(_all_models(client), key=lambda m: m.name):
        versions = _versions(client, model.name)
        if not versions:
            continue
        latest = versions[-1]
        rows.append({"name": model.name, "versions": len(versions), "latest": int(latest.version),
                     "aliases": {a: int(v) for a, v in sorted(model.aliases.items())},
                     "task": task_of(latest), "backbone": latest.tags.get("backbone"), "output": _output(latest),
                     "updated": _iso(model.last_updated_timestamp)})
    return rows


def set_alias(name: str, version: str | int, alias: str, mlflow_client=None) -> dict:
    """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client or workspace.client()
    get_version(f"{name}/{version}", client)
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as err:
        raise RegistryError(f"cannot set alias '{alias}': {err.message}; pick a name such as 'champion' or 'prod'") from None
    return {"name": name, "alias": alias, "version": int(version)}


def delete_version(ref: str, mlflow_client=None, force: bool = False) -> dict:
    """Delete ``NAME/VERSION`` (its aliases go with it; the run and its artifacts stay).

    A version that registered children name as their parent is refused unless ``force`` (then a
    warning names them). Deleting the last version removes the model's name too.
    """
    client = mlflow_client or workspace.client()
    name, version, _ = parse_ref(ref)
    if version is None:
        known = ", ".join(str(v.version) for v in _versions(client, _model(client, name).name))
        raise RegistryError(f"name the version to delete: {name}/VERSION (versions of '{name}': {known or 'none'})")
    found = get_version(ref, client)
    children = orphaned_by_deleting(client, found)
    if children and not force:
        raise RegistryError(f"{name}/{version} is the parent of {', '.join(children)}; delete those first, "
                            f"or pass --force to delete it anyway (they would lose their registered parent)")
    if children:
        warnings.warn(f"deleting {name}/{version}, the parent of {', '.join(children)}: "
                      f"they keep their parent_checkpoint tags but no longer have a registered parent", stacklevel=2)
    record = version_record(found)
    client.delete_model_version(name, version)
    record["model_removed"] = not _versions(client, name)
    if record["model_removed"]:  # a name without versions would linger in lists and suggestions
        client.delete_registered_model(name)
    return record


def resolve_source(ref: str, flag: str) -> Path:
    """What a command's model option names: an existing file or folder as given, else the local file of a
    registered ``NAME[@ALIAS|/VERSION]``; a ConfigError naming ``flag`` when it is neither.

    A name the local workspace cannot hold (no registry there yet) fails at once, without starting MLflow."""
    path = Path(ref)
    if path.exists():
        return path
    fix = "pass a run folder, a checkpoint .pt or a registered NAME[@ALIAS|/VERSION] (vipr model list)"
    try:
        parse_ref(ref)  # NAME, NAME/VERSION or NAME@ALIAS; anything else is a path that is not there
        registered = path.suffix not in (".pt", ".pth")
    except RegistryError:
        registered = False
    if not registered:
        raise ConfigError(f"{flag} {ref}: no such file or folder; {fix}")
    local = workspace.current()
    if local.home is not None and not (local.home / workspace.DB_NAME).is_file():
        raise ConfigError(f"{flag} {ref}: no such file or folder, and {local.describe()} has no model registry; {fix}")
    try:
        return resolve_model(ref)
    except RegistryError as err:
        raise ConfigError(f"{flag} {ref}: no such file or folder, and not a registered model ({err}); {fix}") from None


def resolve_model(ref: str, mlflow_client=None) -> Path:
    """A local checkpoint file for ``ref``: the artifact itself in a local workspace, else a cached download."""
    client = mlflow_client or workspace.client()
    version = get_version(ref, client)
    if version.source.startswith("file://"):
        local = Path(version.source[len("file://"):])
        if local.exists():
            return checkpoint.resolve_path(local)
    key = hashlib.sha256(client.tracking_uri.encode()).hexdigest()[:12]
    return download(version.source, cache_root() / "models" / key / version.name / str(version.version), client.tracking_uri)


def download(source: str, folder: Path, tracking_uri: str) -> Path:
    """Fetch artifact folder ``source`` into ``folder`` once (renamed into place when complete)."""
    import mlflow

    if not folder.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=_mkdir(folder.parent)))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(partial), tracking_uri=tracking_uri)
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return checkpoint.resolve_path(next((p for p in folder.rglob("*.pt")), folder))


def version_record(version) -> dict:
    return {"name": version.name, "version": int(version.version), "uri": f"models:/{version.name}/{version.version}",
            "aliases": list(version.aliases), "source": version.source, "run_id": version.run_id,
            "created": _iso(version.creation_timestamp), "status": version.status, "tags": dict(version.tags)}


def _locate(target: Path) -> tuple[Path, Path | None]:
    """(checkpoint file, its run folder or None) for a run folder or a checkpoint path."""
    if target.is_dir():
        found = next((target / n for n in tracking.CHECKPOINT_NAMES if (target / n).is_file()), None)
        if found is None:
            raise RegistryError(f"{target} holds no checkpoint.pt or classifier.pt; register a `vipr pretrain --out`, "
                                f"`vipr transfer ... --out` or `vipr eval linear --out` folder (kNN evaluations have "
                                f"no model)")
        return found, target
    if not target.is_file():
        raise CheckpointError(f"{target} not found; pass a run folder or a checkpoint .pt file")
    folder = target.parent
    is_run = (folder / "config.yaml").is_file() or (folder / "eval_config.json").is_file()
    return target, folder if is_run and target.name in tracking.CHECKPOINT_NAMES else None


def _artifact_file(ckpt: dict, path: Path, tmp: Path) -> Path:
    """The file to register: ``path`` itself, or a copy without the resume state when it has one
    (a format-1 file is registered as it is: loading migrates it)."""
    if "state" not in ckpt:
        return path
    checkpoint.save_atomic({k: v for k, v in ckpt.items() if k != "state"}, tmp / path.name)
    return tmp / path.name


def _parent(client, tags: dict) -> str | None:
    """The parent's NAME/VERSION: as tagged at registration while that version exists, else looked up by
    content now (the parent may have been registered after the child, or re-registered)."""
    tagged = tags.get("parent_model")
    name, _, number = (tagged or "").partition("/")
    if tagged and any(str(v.version) == number for v in _versions(client, name)):
        return tagged
    sha = tags.get("parent_checkpoint_sha256")
    return find_by_sha256(client, sha) if sha else None


def _model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in _all_models(client) if m.latest_versions)  # names left without versions: none
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none yet"
        raise RegistryError(f"no registered model '{name}' in {workspace.current().describe()}; registered: {shown} "
                            f"(register one: vipr model register RUN_DIR --name {name})") from None


def _exists(client, name: str) -> bool:
    return any(m.name == name for m in client.search_registered_models(f"name = '{name}'"))


def _versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def _all_models(client) -> list:
    models, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        models += list(page)
        token = page.token
        if not token:
            return models


def task_of(version) -> str:
    """The version's ``task`` tag; versions registered before it existed: classifier or backbone by num_classes."""
    has_head = version.tags.get("num_classes", "0") not in ("0", "")
    return version.tags.get("task") or ("classifier" if has_head else "backbone")


def _output(version) -> str:
    """What the model computes: class logits (a head), features, detections (with masks), or a label map."""
    outputs = {"backbone": "features", "detect": "boxes", "instance": "boxes+masks", "segment": "label map"}
    return outputs.get(task_of(version), "logits")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else None
