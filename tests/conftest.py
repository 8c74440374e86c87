"""Suite-wide setup: no test ever writes to the user's ~/.cache/vipr or tracks into ./.vipr.

Shared by tests/platform and tests/serve, built once per session on first use: a two-epoch
pre-training run of the tiny backbone and a linear classifier fitted on it (the real
run-folder format).
"""

import pytest
import torch

TINY_DATA = "builtin:shapes?train=40&test=20&size=16"


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


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory):
    from vipr.pretrain import build_config, run_pretrain

    out = tmp_path_factory.mktemp("runs") / "pretrain"
    config = build_config({"data": {"source": TINY_DATA, "image_size": 16}, "model": {"backbone": "tiny"},
                           "method": {"queue_size": 40, "proj_hidden_dim": 16, "proj_dim": 8},
                           "train": {"epochs": 2, "batch_size": 20, "progress": False, "precision": "fp32",
                                     "log_every": 1}})
    run_pretrain(config, out)
    return out


@pytest.fixture(scope="session")
def linear_run(pretrain_run):
    from vipr.eval.runner import run_eval

    out = pretrain_run.parent / "linear"
    run_eval("linear", checkpoint=str(pretrain_run), data=TINY_DATA, out=out, epochs=5, batch_size=20,
             precision="fp32", progress=False)
    return out
