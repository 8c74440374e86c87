"""Platform fixtures, built once per session: MLflow's import and its schema set-up are slow.

One temporary workspace (``$VIPR_HOME``) for all platform tests, a one-epoch pre-training
run of the tiny backbone and a linear classifier fitted on it (the real run-folder format).
"""

import pytest

from vipr.eval.runner import run_eval
from vipr.pretrain import build_config, run_pretrain

DATA = "builtin:shapes?train=40&test=20&size=16"


@pytest.fixture(scope="session")
def client(tmp_path_factory):
    """The MLflow client of a fresh session-wide workspace; automatic CLI tracking stays off."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VIPR_HOME", str(tmp_path_factory.mktemp("vipr-home")))
    for name in ("VIPR_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        patch.delenv(name, raising=False)
    from vipr.platform import workspace

    yield workspace.client()
    patch.undo()


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pretrain"
    config = build_config({"data": {"source": DATA, "image_size": 16}, "model": {"backbone": "tiny"},
                           "method": {"queue_size": 40, "proj_hidden_dim": 16, "proj_dim": 8},
                           "train": {"epochs": 2, "batch_size": 20, "progress": False, "precision": "fp32",
                                     "log_every": 1}})
    run_pretrain(config, out)
    return out


@pytest.fixture(scope="session")
def linear_run(pretrain_run):
    out = pretrain_run.parent / "linear"
    run_eval("linear", checkpoint=str(pretrain_run), data=DATA, out=out, epochs=5, batch_size=20,
             precision="fp32", progress=False)
    return out
