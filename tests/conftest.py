"""Suite-wide setup: no test ever writes to the user's ~/.cache/vipr or tracks into ./.vipr."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _vipr_cache(tmp_path_factory):
    """Point VIPR_CACHE at a per-session temporary folder; no CLI run is tracked into ./.vipr."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VIPR_CACHE", str(tmp_path_factory.mktemp("vipr-cache")))
    patch.setenv("VIPR_TRACKING", "0")  # tests/platform turns it on against a temporary workspace
    yield
    patch.undo()


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: on a busy 2-core machine two threads wait on each
    other, and a tiny-backbone fine-tuning step took 0.3 s instead of 0.004 s (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
