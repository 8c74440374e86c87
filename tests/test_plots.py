"""Run-folder plots (vipr.plots): curves from metrics.jsonl, the confusion matrix, runs overlaid."""

import json
import shutil

import numpy as np
import pytest

from vipr import plots
from vipr.cli.main import main
from vipr.errors import ViprError

PNG = b"\x89PNG\r\n\x1a\n"


def write_history(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


STEPS = [{"step": s, "epoch": 1 + (s > 2), "loss": 5.0 - s, "lr": 0.1 / s, "images_per_s": 100.0 * s} for s in (1, 2, 3)]
EPOCHS = [{"epoch": 1, "step": 2, "loss_mean": 3.5, "epoch_seconds": 1.0, "images_per_s": 150.0, "knn_top1": 20.0},
          {"epoch": 2, "step": 3, "loss_mean": 2.0, "epoch_seconds": 1.0, "images_per_s": 300.0, "knn_top1": 30.0}]


def test_series_per_step_else_per_epoch():
    assert plots.series(STEPS + EPOCHS, "loss") == ("step", [1, 2, 3], [4.0, 3.0, 2.0])
    assert plots.series(EPOCHS, "loss") == ("epoch", [1, 2], [3.5, 2.0])  # loss_mean stands in
    assert plots.series(STEPS + EPOCHS, "knn_top1") == ("epoch", [1, 2], [20.0, 30.0])
    assert plots.series(STEPS, "val_acc") is None


def test_a_run_folder_gets_its_curves(tmp_path):
    write_history(tmp_path, STEPS + EPOCHS)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a torn last line (a killed run) is skipped
    written = plots.write_run_plots(tmp_path)
    assert sorted(p.name for p in written) == ["knn.png", "loss.png", "lr.png", "throughput.png"]
    assert all(p.read_bytes()[:8] == PNG and p.parent == tmp_path / "plots" for p in written)
    assert not list((tmp_path / "plots").glob(".*.tmp"))


def test_a_plot_that_fails_warns_and_never_raises(tmp_path, monkeypatch):
    write_history(tmp_path, STEPS)
    monkeypatch.setattr(plots, "save", lambda figure, path: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.warns(UserWarning, match="disk full"):
        assert plots.write_run_plots(tmp_path) == []


def test_confusion_matrix_counts_true_rows_and_predicted_columns(tmp_path):
    matrix = plots.confusion_matrix(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1]), num_classes=3)
    expected = np.zeros((3, 3), np.int64)
    for predicted, true in zip([0, 1, 1, 2, 0], [0, 1, 2, 2, 1]):  # an explicit loop over the definition
        expected[true, predicted] += 1
    np.testing.assert_array_equal(matrix, expected)
    path = plots.write_confusion(tmp_path, matrix, ["a", "b", "c"])
    assert path == tmp_path / "plots" / "confusion.png" and path.read_bytes()[:8] == PNG


def test_overlay_of_runs_and_a_metric_none_logged(tmp_path):
    write_history(tmp_path / "a", STEPS)
    write_history(tmp_path / "b", STEPS)
    out = plots.overlay_runs({"a": tmp_path / "a", "b": tmp_path / "b"}, "lr", tmp_path / "lr.png")
    assert out.read_bytes()[:8] == PNG
    with pytest.raises(ViprError, match="one of: images_per_s, loss, lr"):
        plots.overlay_runs({"a": tmp_path / "a"}, "knn_top1", tmp_path / "x.png")


def test_pretrain_and_eval_runs_get_their_plots(pretrain_run, tmp_path, capsys):
    run = tmp_path / "pre"
    shutil.copytree(pretrain_run, run)
    assert {p.name for p in plots.write_run_plots(run)} >= {"loss.png", "lr.png", "throughput.png"}
    from vipr.eval.runner import run_eval

    run_eval("knn", checkpoint=str(pretrain_run), data="builtin:shapes?train=40&test=20&size=16", out=tmp_path / "k",
             k=5, precision="fp32", progress=False)
    assert (tmp_path / "k" / "plots" / "confusion.png").read_bytes()[:8] == PNG
    out = tmp_path / "cli"
    assert main(["pretrain", "--data", "builtin:shapes?train=40&test=20&size=16", "--backbone", "tiny",
                 "--image-size", "16", "--epochs", "1", "--batch-size", "20", "--precision", "fp32", "--no-progress",
                 "--no-track", "--set", "method.queue_size=40", "--out", str(out)]) == 0
    assert (out / "plots" / "loss.png").is_file()  # the CLI draws them when the run ends


def test_a_stopped_run_gets_its_curves_too(tmp_path):
    from vipr.cli.runs import tracked
    from vipr.errors import Interrupted

    write_history(tmp_path, STEPS)
    with pytest.raises(Interrupted), tracked(tmp_path, "pretrain", no_track=True):
        raise Interrupted("stopped by signal 2 at step 3")
    assert (tmp_path / "plots" / "loss.png").is_file()
