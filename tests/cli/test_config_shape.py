"""One config shape: every command takes --config FILE and --set section.key=value, writes its resolved
config.yaml, suggests the full dotted key for a misspelt one, and `vipr config show` prints its defaults."""

import pytest
import yaml

from vipr.cli.main import main

DATA = "builtin:shapes?train=60&test=20&size=16"
RANDOM = ["--checkpoint", "random", "--backbone", "tiny", "--image-size", "16"]
COMMANDS = [["pretrain"], ["nas", "search"], ["nas", "train"], ["eval", "knn"], ["eval", "linear"],
            ["eval", "finetune"], ["eval", "fewshot"], ["transfer", "detect"], ["transfer", "segment"], ["serve"]]


def show(capsys, *argv) -> tuple[str, dict]:
    assert main(["config", "show", *argv]) == 0
    text = capsys.readouterr().out
    return text, yaml.safe_load(text)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_config_show_prints_yaml_that_config_reads_back(command, capsys, tmp_path):
    text, defaults = show(capsys, *command)
    assert text.startswith(f"# vipr {' '.join(command)}: defaults") and isinstance(defaults, dict) and defaults
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again, resolved = show(capsys, *command, "--config", str(path))
    assert resolved == defaults  # what config show prints, --config reads as the same config
    assert main(["config", "show", *command, "--set", "x.y=1"]) == 1  # unknown keys are refused here too
    capsys.readouterr()


def test_config_show_pretrain_method_section_and_profile_note(capsys):
    text, config = show(capsys, "pretrain", "--method", "byol")
    assert config["method"]["name"] == "byol" and "momentum" in config["method"]
    assert "# data.profile small" in text and "optim.lr 0.12" in text  # the small-image recipe is named
    text, config = show(capsys, "pretrain", "--set", "data.image_size=224")
    assert config["data"]["profile"] == "large" and "# data.profile small" not in text


def test_config_show_nas_strategy_and_bad_names(capsys):
    _, config = show(capsys, "nas", "search", "--strategy", "pcdarts")
    assert config["strategy"]["name"] == "pcdarts" and "partial_channels" in config["strategy"]
    assert main(["config", "show", "eval", "kn"]) == 1
    assert "did you mean 'eval knn'" in capsys.readouterr().err
    assert main(["config", "show", "pretrain", "--method", "bylo"]) == 1
    err = capsys.readouterr().err
    assert "--method bylo" in err and "did you mean 'byol'" in err and "Traceback" not in err


@pytest.mark.parametrize("command, key", [(["nas", "search"], "train.batch_size"), (["pretrain"], "train.batch_size"),
                                          (["nas", "train"], "train.batch_size"),
                                          (["eval", "finetune"], "finetune.batch_size")])
def test_a_bare_key_suggests_the_full_dotted_key(command, key, capsys, tmp_path):
    extra = [*RANDOM, "--data", DATA] if command[0] == "eval" else []
    code = main([*command, *extra, "--out", str(tmp_path / "run"), "--set", "batch_size=32"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown config key 'batch_size'" in err and f"did you mean '{key}'" in err, err


def test_eval_reads_config_file_and_set_and_writes_config_yaml(capsys, tmp_path):
    config = tmp_path / "knn.yaml"
    config.write_text("knn:\n  k: 3\n  temperature: 0.2\n")
    out = tmp_path / "run"
    code = main(["eval", "knn", *RANDOM, "--data", DATA, "--config", str(config), "--set", "knn.k=5",
                 "--out", str(out), "--no-track", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["knn"] == {**saved["knn"], "k": 5, "temperature": 0.2}  # --set over the file
    assert saved["input"]["checkpoint"] == "random" and saved["input"]["data"] == DATA


def test_eval_and_serve_bad_values_name_flag_or_key(capsys):
    assert main(["eval", "knn", *RANDOM, "--data", DATA, "--set", "knn.k=0"]) == 1
    assert "'knn.k' must be an integer" in capsys.readouterr().err
    assert main(["eval", "fewshot", *RANDOM, "--data", DATA, "--set", "input.label_split=x.json"]) == 1
    assert "input.label_split" in capsys.readouterr().err
    assert main(["serve", "m.pt", "--set", "serve.max_queue=0"]) == 1
    assert "'serve.max_queue' must be an integer" in capsys.readouterr().err
    assert main(["serve", "m.pt", "--set", "max_queue=3"]) == 1
    assert "did you mean 'serve.max_queue'" in capsys.readouterr().err
