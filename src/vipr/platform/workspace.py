"""The workspace: where runs are tracked and models registered (MLflow, embedded or a team server).

Local, the default (zero set-up, DESIGN.md principle 7): one folder, ``./.vipr`` or
``$VIPR_HOME``, holding

    mlflow.db     SQLite tracking + model-registry store
    artifacts/    run artifacts (configs, registered checkpoints)
    runs/         run folders of commands given no --out (``vipr eval knn ...``)

Team: ``$VIPR_TRACKING_URI`` (or MLflow's own ``$MLFLOW_TRACKING_URI``) names an MLflow
server (``http://mlflow:5000``) or a database URL; artifacts then go where it says.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vipr.errors import RegistryError

ENV_HOME = "VIPR_HOME"
ENV_URIS = ("VIPR_TRACKING_URI", "MLFLOW_TRACKING_URI")
DEFAULT_HOME = ".vipr"
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "artifacts"


@dataclass(frozen=True)
class Workspace:
    """A tracking URI, and the local folder behind it (None for a team server)."""

    tracking_uri: str
    home: Path | None = None

    @property
    def artifact_root(self) -> str | None:
        """``file://`` URI of the local artifact folder; None when the server picks."""
        return (self.home / ARTIFACTS_NAME).as_uri() if self.home else None

    def describe(self) -> str:
        return f"workspace {self.home}" if self.home else f"tracking server {self.tracking_uri}"


def current(environ: Mapping[str, str] | None = None) -> Workspace:
    """The workspace the environment (``environ``, default this process's) selects: a tracking URI variable,
    else the local folder."""
    environ = os.environ if environ is None else environ
    for name in ENV_URIS:
        uri = environ.get(name, "").strip()
        if uri:
            return Workspace(uri)
    home = Path(environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()
    return Workspace(f"sqlite:///{home / DB_NAME}", home)


def runs_root() -> Path:
    """Where commands run without --out keep their run folders: ``WORKSPACE/runs`` (the local folder's,
    also when a team server tracks them)."""
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve() / "runs"


def client(workspace: Workspace | None = None):
    """An ``mlflow.MlflowClient`` on the workspace's tracking and registry store (created if local)."""
    workspace = workspace or current()
    return _client(workspace.tracking_uri, workspace.home)


@functools.lru_cache(maxsize=8)
def _client(uri: str, home: Path | None):
    configure_mlflow()
    from mlflow import MlflowClient

    if home is not None:
        try:
            (home / ARTIFACTS_NAME).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"cannot create the workspace folder {home}: {err}; "
                                f"set {ENV_HOME} to a writable folder") from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client, name: str, workspace: Workspace | None = None) -> str:
    """The id of experiment ``name``, created on first use (its artifacts under the workspace folder)."""
    workspace = workspace or current()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = workspace.artifact_root
    location = f"{root}/{name}" if root else None
    return mlflow_client.create_experiment(name, artifact_location=location)


def configure_mlflow() -> None:
    """Silence MLflow's chatter (schema migrations, telemetry, git probing, deprecations) and bound its
    retries: by default an unreachable server is retried for ~4 minutes, here for ~10 s (the
    environment may still set MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # seconds per request
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (configures its loggers on import; ours must come after)

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
