"""Loading never runs code: every checkpoint read is ``weights_only``, and what vipr writes is plain data."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from vipr.engine import checkpoint as ckpt
from vipr.engine.migrate import FORMAT_V1
from vipr.errors import CheckpointError
from vipr.platform import tracking
from vipr.serve.runtime import list_runtimes, load_runtime

DATA = "builtin:shapes?train=20&test=10&size=16"


class WritesMarker:
    """Unpickling this would create ``path``: what a malicious checkpoint does instead of loading."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


@pytest.fixture
def crafted(tmp_path):
    """(crafted.pt, the marker file its pickle would create): a format-2 look-alike with a payload."""
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.pt"
    torch.save({"format": ckpt.FORMAT, "card": WritesMarker(marker), "backbone": {}}, path)
    return path, marker


def one_line_refusal(err: CheckpointError, path) -> None:
    message = str(err)
    assert "\n" not in message and str(path) in message and "may be unsafe" in message


def test_the_payload_works_when_unpickled_unsafely(crafted):
    path, marker = crafted
    torch.load(path, weights_only=False)  # proves the test file is dangerous (and the refusal is not luck)
    assert marker.exists()


def test_cli_refuses_a_crafted_checkpoint(crafted, tmp_path):
    path, marker = crafted
    env = {**os.environ, "VIPR_CACHE": str(tmp_path / "cache"), "VIPR_TRACKING": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "vipr.cli.main", "eval", "knn", "--checkpoint", str(path),
                           "--data", DATA, "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and "may be unsafe" in err and str(path) in err
    assert not marker.exists()


@pytest.mark.parametrize("kind", list_runtimes())  # every registered runtime
def test_serving_refuses_a_crafted_checkpoint(crafted, kind, tmp_path):
    path, marker = crafted
    with pytest.raises(CheckpointError) as err:
        load_runtime(path, kind, cache_dir=tmp_path / "onnx-cache")
    one_line_refusal(err.value, path)
    assert not marker.exists() and not list((tmp_path / "onnx-cache").glob("*"))  # no half-written export left


def test_loaders_refuse_it_everywhere(crafted):
    path, marker = crafted
    for load in (ckpt.load, ckpt.load_card):
        with pytest.raises(CheckpointError) as err:
            load(path)
        one_line_refusal(err.value, path)
    assert tracking.checkpoint_card(path) is None  # tracking tolerates it, and runs nothing either
    assert not marker.exists()


def test_numpy_allowed_for_format_1_runs_no_payload(tmp_path):
    """The numpy globals format-1 RNG states need do not let an object array's payload through."""
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT_V1, "x": np.array([WritesMarker(marker)], dtype=object)}, path)
    with pytest.raises(CheckpointError, match="may be unsafe"):
        ckpt.load(path)
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pt"
    ckpt.save_atomic({"format": ckpt.FORMAT, "x": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="may be truncated"):
        ckpt.load(path)


def test_rng_state_is_plain_data_and_restores_every_stream(tmp_path):
    generator = torch.Generator().manual_seed(5)
    np.random.seed(1), random.seed(2), torch.manual_seed(3)
    ckpt.save_atomic({"rng": ckpt.rng_state(generator)}, tmp_path / "rng.pt")
    expected = (np.random.rand(3), random.random(), torch.rand(3), torch.rand(3, generator=generator))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "rng.pt") == []
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"], generator)
    again = (np.random.rand(3), random.random(), torch.rand(3), torch.rand(3, generator=generator))
    assert np.array_equal(expected[0], again[0]) and expected[1] == again[1]
    assert torch.equal(expected[2], again[2]) and torch.equal(expected[3], again[3])


def test_a_pretraining_checkpoint_is_plain_data(pretrain_run):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(pretrain_run / "checkpoint.pt") == []
