"""Suite-wide setup: no test ever writes to the user's ~/.cache/vipr."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _vipr_cache(tmp_path_factory):
    """Point VIPR_CACHE at a per-session temporary folder for every test."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VIPR_CACHE", str(tmp_path_factory.mktemp("vipr-cache")))
    yield
    patch.undo()
