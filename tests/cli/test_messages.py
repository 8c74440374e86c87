"""Issue 12, one test per defect: warnings instead of silent changes, messages that name the
problem (option, key, class, command), help texts that quote the code, exit codes, tracking status."""

import json
import socket
import warnings
from pathlib import Path

import pytest

from vipr.cli import data_cmd
from vipr.cli.main import build_parser, main

DATA = "builtin:shapes?train=60&test=20&size=16"
RANDOM_TINY = ["--checkpoint", "random", "--backbone", "tiny", "--image-size", "16", "--data", DATA]
README = Path(__file__).resolve().parents[2] / "README.md"


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- 1. no silent changes ------------------------------------------------------------------------

def test_knn_k_above_the_train_images_warns_on_one_line(capsys):
    code, out, err = run_cli(["eval", "knn", *RANDOM_TINY, "--k", "200", "--no-progress"], capsys)
    assert code == 0 and "knn: top-1" in out
    assert err.strip().splitlines() == ["vipr eval knn: warning: k=200 neighbours asked for, but there are only 60 "
                                        "train samples: the vote uses all 60 (pass --k 60 or less to choose it "
                                        "yourself)"]


@pytest.mark.parametrize("option, value, message", [
    ("--k", "0", "--k must be an integer in [1, 10000000], got 0"),
    ("--temperature", "-1", "--temperature must be a number in (0, 100], got -1.0"),
    ("--image-size", "0", "--image-size must be an integer in [8, 4096], got 0"),
    ("--k", "-5", "--k must be an integer in [1, 10000000], got -5"),
])
def test_knn_refuses_settings_that_gave_wrong_scores(option, value, message, capsys):
    code, out, err = run_cli(["eval", "knn", *RANDOM_TINY, option, value], capsys)
    assert (code, out, err.strip()) == (1, "", f"vipr eval knn: error: {message}")


def test_knn_predict_refuses_k_and_temperature_it_cannot_use():
    import torch

    from vipr.eval.knn import knn_predict

    train, labels = torch.eye(3), torch.tensor([0, 1, 2])
    for bad in ({"k": 0}, {"temperature": -1.0}):
        with pytest.raises(ValueError, match="k >= 1 and temperature > 0"):
            knn_predict(train, labels, train, num_classes=3, **bad)
    with pytest.warns(UserWarning, match="k=5 neighbours asked for, but there are only 3 train samples"):
        knn_predict(train, labels, train, k=5, num_classes=3)


def test_a_queue_longer_than_the_train_set_warns():
    from vipr.config import apply_overrides
    from vipr.pretrain import build_config, warn_about_data

    with pytest.warns(UserWarning, match=r"method.queue_size 4096 is larger than the 164 training images"):
        warn_about_data(build_config({}), 164)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_data(build_config(apply_overrides({}, ["method.queue_size=128"])), 164)
        warn_about_data(build_config(apply_overrides({}, ["method.name=simclr"])), 164)  # no queue


# ---- 2. one line, not a traceback; the out folder checked before the work ------------------------

def test_eval_linear_checks_its_out_folder_before_evaluating(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli(["eval", "linear", *RANDOM_TINY, "--out", str(blocker / "run"), "--no-track"], capsys)
    assert code == 1 and out == ""  # no score printed, then lost
    assert err.strip() == (f"vipr eval linear: error: --out {blocker / 'run'} cannot be created: {blocker} is a file, "
                           f"not a folder; pick another path")


@pytest.mark.parametrize("option, value, message", [
    ("--label-fraction", "1.5", "--label-fraction must be a number in (0, 1], got 1.5"),
    ("--label-fraction", "0", "--label-fraction must be a number in (0, 1], got 0.0"),
    ("--label-fraction", "-0.1", "--label-fraction must be a number in (0, 1], got -0.1"),
    ("--per-class", "0", "--per-class must be an integer in [1, 10000000], got 0"),
])
def test_data_split_refuses_fractions_and_counts_out_of_range(option, value, message, tmp_path, capsys):
    code, _, err = run_cli(["data", "split", DATA, option, value, "--out", str(tmp_path / "s.json")], capsys)
    assert (code, err.strip()) == (1, f"vipr data split: error: {message}")


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size (train.batch_size) must be an integer in [1, 1048576], got 0"),
    (["--lr", "-1"], "--lr (optim.lr) must be a number in (0, 100], got -1.0"),
    (["--set", "method.queue_size=-1"], "'method.queue_size' must be an integer in [1, 16777216], got -1"),
    (["--image-size", "0"], "--image-size (data.image_size) must be an integer in [8, 4096], got 0"),
])
def test_pretrain_refuses_values_that_crashed_inside_torch(args, message, tmp_path, capsys):
    code, _, err = run_cli(["pretrain", "--out", str(tmp_path / "run"), *args], capsys)
    assert (code, err.strip()) == (1, f"vipr pretrain: error: {message}")
    assert not (tmp_path / "run").exists()


def test_malformed_config_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 1\n bad: [\n")
    code, _, err = run_cli(["pretrain", "--config", str(bad), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"config file {bad} is not valid YAML (line 3, column 2" in err


def test_an_os_error_no_check_foresaw_is_one_line(monkeypatch, capsys):
    def full_disk(args):
        raise OSError(28, "No space left on device", "runs/x/metrics.json")

    monkeypatch.setattr(data_cmd, "run_info", full_disk)
    code, _, err = run_cli(["data", "info", DATA], capsys)
    assert code == 1 and err.strip() == ("vipr data info: error: No space left on device: runs/x/metrics.json; check "
                                         "the path, its permissions and the free space")


# ---- 4. messages that name the problem -----------------------------------------------------------

def test_resume_with_changed_options_names_the_keys(tmp_path, capsys, one_thread):
    run = ["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1", "--batch-size",
           "20", "--out", str(tmp_path), "--no-progress", "--no-track", "--precision", "fp32",
           "--set", "method.queue_size=40", "method.proj_hidden_dim=16", "method.proj_dim=8"]
    assert run_cli(run, capsys)[0] == 0
    code, _, err = run_cli([*run, "--resume", "--lr", "0.1", "--seed", "3"], capsys)
    assert code == 1 and "written with another configuration (optim.lr: 0.12 -> 0.1, train.seed: 0 -> 3)" in err


def test_a_refused_resume_leaves_the_run_folders_config(tmp_path, capsys, one_thread):
    run = ["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1", "--batch-size",
           "20", "--out", str(tmp_path), "--no-progress", "--no-track", "--precision", "fp32",
           "--set", "method.queue_size=40", "method.proj_hidden_dim=16", "method.proj_dim=8"]
    assert run_cli(run, capsys)[0] == 0
    before = (tmp_path / "config.yaml").read_text()
    assert run_cli([*run, "--resume", "--seed", "3"], capsys)[0] == 1
    assert (tmp_path / "config.yaml").read_text() == before  # still the checkpoint's settings


def test_errors_name_the_subcommand_and_its_usage(capsys):
    code, _, err = run_cli(["data", "split", DATA, "--per-class", "0", "--out", "x.json"], capsys)
    assert code == 1 and err.startswith("vipr data split: error: ")
    code, _, err = run_cli(["data", "split", DATA, "--per-class", "2", "--sed", "1", "--out", "x.json"], capsys)
    assert code == 2 and err.startswith("usage: vipr data split ")
    assert "vipr data split: error: unrecognized argument: --sed (did you mean --seed?)" in err


def test_unknown_key_suggests_the_full_dotted_key(tmp_path, capsys):
    code, _, err = run_cli(["nas", "search", "--out", str(tmp_path / "run"), "--set", "batch_size=32"], capsys)
    assert (code, err.strip()) == (1, "vipr nas search: error: unknown config key 'batch_size' (did you mean "
                                      "'train.batch_size'?)")


def test_too_many_per_class_names_the_class(tmp_path, capsys):
    code, _, err = run_cli(["data", "split", DATA, "--per-class", "1000", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 1 and "but class 'circle' (label 0) has only 6 images; lower per_class to at most 6" in err


def test_a_file_that_is_no_label_split_is_never_offered_for_overwriting(tmp_path, capsys):
    notes = tmp_path / "notdata.txt"
    notes.write_text("my notes\n")
    code, _, err = run_cli(["eval", "linear", *RANDOM_TINY, "--label-split", str(notes), "--no-track"], capsys)
    assert code == 1 and f"{notes} is not a label split (not JSON)" in err
    assert f"--out {notes}" not in err and f"--out {tmp_path / 'label-split.json'}" in err
    assert notes.read_text() == "my notes\n"


def test_serve_on_a_busy_port_says_so_before_saying_where_it_serves(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(["serve", "model.pt", "--port", str(port)], capsys)
    assert code == 1 and "serving" not in out + err
    assert err.startswith(f"vipr serve: error: cannot listen on 127.0.0.1:{port} (Address already in use); ")


# ---- 5. help that quotes the code ----------------------------------------------------------------

def test_eval_help_quotes_the_finetune_defaults_it_runs_with(capsys):
    from vipr.cli.options import FinetuneOptions
    from vipr.eval.finetune import BACKBONE_LR_SCALE

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    lr = FinetuneOptions.lr
    assert f"lr {lr:g} for the head and {lr * BACKBONE_LR_SCALE:g} for the backbone, {FinetuneOptions.epochs} " \
           f"epochs" in text
    assert build_parser().parse_args(["eval", "finetune", *RANDOM_TINY]).lr is None  # the default is the dataclass's


def test_nas_search_help_shows_nas_train_as_the_readme_does(capsys):
    with pytest.raises(SystemExit):
        main(["nas", "search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "vipr nas train DIR/genotype.json" in text
    assert "vipr nas train runs/nas-smoke/search/genotype.json" in README.read_text()
    assert build_parser().parse_args(["nas", "train", "DIR/genotype.json"]).genotype == "DIR/genotype.json"


# ---- 6. exit codes and the tracking status -------------------------------------------------------

@pytest.mark.parametrize("raised, code, line", [
    (None, 0, None),
    (KeyboardInterrupt(), 130, "vipr data info: interrupted"),
])
def test_exit_codes(raised, code, line, monkeypatch, capsys):
    if raised is not None:
        def stop(args):
            raise raised

        monkeypatch.setattr(data_cmd, "run_info", stop)
    assert run_cli(["data", "info", DATA], capsys)[0] == code
    assert run_cli(["data", "info", "no/such/data"], capsys)[0] == (1 if raised is None else 130)
    assert run_cli(["data", "info", DATA, "--jsn"], capsys)[0] == 2


def test_interrupted_run_exits_130(monkeypatch, capsys):
    from vipr.errors import Interrupted

    def stop(args):
        raise Interrupted("interrupted at step 3; checkpoint saved, continue with --resume")

    monkeypatch.setattr(data_cmd, "run_info", stop)
    code, _, err = run_cli(["data", "info", DATA], capsys)
    assert (code, err.strip()) == (130, "vipr data info: interrupted at step 3; checkpoint saved, continue with --resume")


@pytest.mark.parametrize("raised, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_ends_badly_is_tracked_failed_or_killed(raised, status, tmp_path, monkeypatch):
    from vipr.cli.runs import tracked
    from vipr.platform import tracking

    logged = []
    monkeypatch.setattr(tracking, "track_run", lambda out, kind, no_track, status=None: logged.append((kind, status)))
    with pytest.raises(type(raised)), tracked(tmp_path, "pretrain", False):
        (tmp_path / "config.yaml").write_text("train: {}\n")
        raise raised
    assert logged == [("pretrain", status)]
    with pytest.raises(RuntimeError), tracked(tmp_path / "never", "pretrain", False):
        raise RuntimeError("before the run folder")  # nothing to log
    assert logged == [("pretrain", status)]


def test_split_file_records_the_options(tmp_path, capsys):
    split = tmp_path / "s.json"
    assert run_cli(["data", "split", DATA, "--label-fraction", "0.1", "--out", str(split)], capsys)[0] == 0
    doc = json.loads(split.read_text())
    assert doc["label_fraction"] == 0.1 and doc["per_class"] is None and doc["seed"] == 0
