"""Platform fixtures, built once per session: MLflow's import and its schema set-up are slow.

One temporary workspace (``$VIPR_HOME``) for all platform tests; the tiny pre-training run
and its linear classifier (``pretrain_run``, ``linear_run``) live in tests/conftest.py, which
tests/serve shares.
"""

import pytest

DATA = "builtin:shapes?train=40&test=20&size=16"  # the data of tests/conftest.py's pretrain_run


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
