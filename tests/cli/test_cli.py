"""The CLI contract: options, suggestions without tracebacks, --json, data commands."""

import json

import pytest

from vipr.cli.main import main
from vipr.models.loading import load_backbone

DATA = "builtin:shapes?train=60&test=20&size=16"


def test_unknown_option_suggests(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--epoch", "3"])
    assert stop.value.code == 2
    assert "did you mean --epochs" in capsys.readouterr().err


def test_unknown_config_key_is_a_message_not_a_traceback(capsys, tmp_path):
    code = main(["pretrain", "--out", str(tmp_path), "--set", "optim.lrr=0.1"])
    err = capsys.readouterr().err
    assert code == 1 and "did you mean 'optim.lr'" in err and "Traceback" not in err


def test_missing_data_path_is_a_message(capsys, tmp_path):
    code = main(["eval", "knn", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16",
                 "--data", str(tmp_path / "nowhere")])
    assert code == 1 and "nowhere" in capsys.readouterr().err


def test_data_info_and_split(capsys, tmp_path):
    assert main(["data", "info", DATA, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["digest"] and len(info["classes"]) == 10
    split = tmp_path / "split.json"
    assert main(["data", "split", DATA, "--per-class", "2", "--seed", "1", "--out", str(split)]) == 0
    assert len(json.loads(split.read_text())["indices"]) == 20


def test_pretrain_then_eval_json(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "20", "--out", str(run), "--no-progress", "--json",
                 "--set", "method.queue_size=40", "method.proj_hidden_dim=16", "method.proj_dim=8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    for kind in ("knn", "linear"):
        out = tmp_path / kind
        assert main(["eval", kind, "--checkpoint", str(run), "--data", DATA, "--out", str(out),
                     "--no-progress", "--json"]) == 0
        last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert 0 <= last["top1"] <= last["top5"] <= 100
        assert json.loads((out / "metrics.json").read_text())["top1"] == last["top1"]
    assert (tmp_path / "linear" / "classifier.pt").is_file()


@pytest.mark.parametrize("method", ["byol", "nnclr"])
def test_pretrain_cli_with_byol_and_nnclr(method, capsys, tmp_path, one_thread):
    settings = ["method.proj_hidden_dim=16", "method.proj_dim=8", "method.pred_hidden_dim=16"]
    settings += ["method.queue_size=40"] if method == "nnclr" else []
    assert main(["pretrain", "--method", method, "--data", DATA, "--backbone", "tiny", "--image-size", "16",
                 "--epochs", "1", "--batch-size", "20", "--out", str(tmp_path), "--no-progress", "--json",
                 "--set", *settings]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    assert load_backbone(tmp_path)[1].method == method


def test_pretrain_help_names_every_method(capsys):
    from vipr.ssl import list_methods

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in list_methods())


@pytest.mark.parametrize("command", [["pretrain"], ["eval", "knn"], ["quickstart"]])
def test_backbone_help_lists_the_registry(command, capsys):
    from vipr.models import list_backbones

    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in list_backbones())  # darts_net and timm:NAME included


def test_quickstart_runs_end_to_end(capsys, tmp_path):
    code = main(["quickstart", "--data", "builtin:shapes?train=256&test=40&size=16", "--epochs", "1", "--out", str(tmp_path), "--no-progress", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert "random init" in out and "pre-trained" in out
    record = json.loads(out.strip().splitlines()[-1])
    assert {"random_knn_top1", "pre-trained_knn_top1", "random_linear_top1", "pre-trained_linear_top1"} <= record.keys()
    assert (tmp_path / "eval-linear-pre-trained" / "classifier.pt").is_file()
