"""One resume rule for every loop: a checkpoint continues only under its config digest (vipr.config.config_digest)."""

import pytest
import torch

from vipr.cli.main import main
from vipr.config import config_digest
from vipr.engine import checkpoint as ckpt
from vipr.engine.resume import check_same_config
from vipr.errors import CheckpointError

SEARCH = ["nas", "search", "--data", "builtin:shapes?classes=3&train=16&test=4&size=16", "--channels", "4",
          "--layers", "3", "--batch-size", "8", "--image-size", "16", "--epochs", "1", "--warmup-epochs", "0",
          "--precision", "fp32", "--no-progress", "--set", "train.num_threads=1", "train.eval_batches=1"]


def test_the_rule_names_the_change_only_on_a_mismatch(tmp_path):
    check_same_config("abc", "abc", tmp_path, lambda: pytest.fail("described a match"))
    with pytest.raises(CheckpointError, match=r"another configuration \(lr 0.1 -> 0.2\); resume with the same"):
        check_same_config("abc", "abd", tmp_path, lambda: "lr 0.1 -> 0.2")


def test_a_search_checkpoint_carries_the_digest_and_resumes_by_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SEARCH, "--out", str(out)]) == 0
    saved = torch.load(out / ckpt.CHECKPOINT_NAME, weights_only=False)
    assert saved["config_hash"] == config_digest(saved["config"])
    capsys.readouterr()
    assert main([*SEARCH, "--out", str(out), "--resume", "--set", "train.progress=true"]) == 0  # run-only: allowed
    assert main([*SEARCH, "--out", str(out), "--resume", "--seed", "3"]) != 0
    assert "another configuration" in capsys.readouterr().err
