"""docs/architecture.md's worked example, as written there: the method file registers and trains two steps."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from vipr import config as config_module
from vipr.cli.main import main
from vipr.models.loading import load_backbone
from vipr.ssl import list_methods, registry
from vipr.ssl.registry import MethodConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
DATA = "builtin:shapes?train=40&test=10&size=16"


def example_code() -> str:
    """The first python block after the heading "Worked example: adding an SSL method"."""
    text = DOC.read_text()
    section = text[text.index("### Worked example: adding an SSL method"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def example_method(tmp_path, monkeypatch):
    """Import the doc's code block as a module; its registration is undone after the test."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setitem(config_module._VARIANTS, MethodConfig, dict(config_module._VARIANTS[MethodConfig]))
    path = tmp_path / "doc_example_method.py"
    path.write_text(example_code())
    spec = importlib.util.spec_from_file_location("doc_example_method", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return "barlow"


def test_the_worked_example_registers_and_trains_two_steps(example_method, capsys, tmp_path):
    assert example_method in list_methods()
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert example_method in capsys.readouterr().out  # the CLI's choices come from the registry
    out = tmp_path / "run"
    assert main(["pretrain", "--method", example_method, "--data", DATA, "--backbone", "tiny", "--image-size", "16",
                 "--epochs", "1", "--batch-size", "20", "--out", str(out), "--no-progress", "--no-track",
                 "--json", "--set", "train.num_threads=1"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and load_backbone(out)[1].method == example_method
