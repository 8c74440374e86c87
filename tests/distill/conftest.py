"""A tiny teacher for every distillation test: pre-trained one epoch on 16 px shapes, and a classifier on it.

Built once per session through the CLI (the real run-folder format), about 8 s on one core.
"""

import pytest

from vipr.cli.main import main

DATA = "builtin:shapes?train=64&test=16&size=16"
FAST = ["--no-progress", "--no-track", "--precision", "fp32"]


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    """A tiny moco_v2 backbone run folder (card task backbone, 16 px)."""
    out = tmp_path_factory.mktemp("distill") / "teacher"
    assert main(["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "32", "--out", str(out), *FAST,
                 "--set", "method.queue_size=32", "method.proj_hidden_dim=16", "method.proj_dim=8"]) == 0
    return out


@pytest.fixture(scope="session")
def classifier_teacher(teacher):
    """A linear classifier fitted on the teacher (card task classifier, the data's 10 classes)."""
    out = teacher.parent / "classifier"
    assert main(["eval", "linear", "--checkpoint", str(teacher), "--data", DATA, "--out", str(out),
                 "--no-progress"]) == 0
    return out
