"""Workspace selection: local folder by default, a tracking URI when the environment names one."""

from pathlib import Path

from vipr.cli.ui_cmd import ui_command
from vipr.platform import workspace


def test_local_workspace_from_vipr_home(monkeypatch, tmp_path):
    for name in workspace.ENV_URIS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "ws"))
    ws = workspace.current()
    assert ws.home == tmp_path / "ws"
    assert ws.tracking_uri == f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    assert ws.artifact_root == (tmp_path / "ws" / "artifacts").as_uri()


def test_default_home_is_dot_vipr(monkeypatch, tmp_path):
    for name in (*workspace.ENV_URIS, "VIPR_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert workspace.current().home == Path(tmp_path).resolve() / ".vipr"


def test_tracking_uri_wins_and_vipr_over_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert workspace.current() == workspace.Workspace("http://team:5000")
    monkeypatch.setenv("VIPR_TRACKING_URI", "postgresql://db/mlflow")
    ws = workspace.current()
    assert ws.tracking_uri == "postgresql://db/mlflow" and ws.home is None and ws.artifact_root is None


def test_ui_command_serves_the_workspace(monkeypatch, tmp_path):
    ws = workspace.Workspace(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    cmd = ui_command(ws, "127.0.0.1", 5123)
    assert cmd[1:4] == ["-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == ws.tracking_uri
    assert cmd[cmd.index("--default-artifact-root") + 1] == ws.artifact_root
    assert cmd[cmd.index("--port") + 1] == "5123" and cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_client_points_at_the_workspace_store(client):
    ws = workspace.current()
    assert client.tracking_uri == ws.tracking_uri and client._registry_uri == ws.tracking_uri
    assert (ws.home / "mlflow.db").is_file() and (ws.home / "artifacts").is_dir()
