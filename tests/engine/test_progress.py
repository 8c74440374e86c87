"""Progress: a live bar only on a terminal; elsewhere (or --no-progress) a log line per epoch with the figures."""

import os
import subprocess
import sys

import pytest

from vipr.engine import progress
from vipr.engine.progress import Progress, side_bar


def run_steps(bar, steps, epoch_steps):
    for step in range(steps):
        bar.update_stats(epoch=step // epoch_steps + 1, loss=2.0 - step / 100, rate=512.0, lr=0.06)
        bar.advance()
    bar.close()


def test_off_a_terminal_one_line_per_epoch_with_the_figures(capsys):
    run_steps(Progress(20, epoch_steps=5), 20, 5)  # capsys: stdout and stderr are no terminals
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and "\r" not in "".join(lines)
    assert lines[0].startswith("train: step 5/20 (25%) epoch 1 loss 1.9600 lr 0.06 512 img/s elapsed ")
    assert all(" ETA " in line for line in lines) and lines[-1].startswith("train: step 20/20 (100%) epoch 4")


def test_no_progress_on_a_terminal_is_lines_too(monkeypatch, capsys):
    monkeypatch.setattr(progress, "live_terminal", lambda: True)
    run_steps(Progress(6, epoch_steps=3, bars=False), 6, 3)
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_a_stop_mid_epoch_says_where_and_other_ranks_say_nothing(capsys):
    bar = Progress(20, initial=5, epoch_steps=10, desc="search")
    run_steps(bar, 3, 10)
    assert capsys.readouterr().err.splitlines()[-1].startswith("search: step 8/20 (40%)")
    run_steps(Progress(20, enabled=False, epoch_steps=5), 20, 5)
    assert capsys.readouterr().err == ""


def test_side_tasks_speak_only_when_long(monkeypatch, capsys):
    for _ in side_bar(range(50), desc="test features", unit="batch"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "SIDE_TASK_QUIET_S", 0.0)
    with side_bar(total=100, desc="decoding train", unit="img") as bar:
        bar.update(100)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("decoding train: 100/100 img ") and line.endswith(" done")


@pytest.mark.parametrize("flags", [[], ["--no-progress"]])
def test_piped_pretrain_prints_a_handful_of_lines(tmp_path, flags):
    command = [sys.executable, "-m", "vipr.cli.main", "pretrain", "--data", "builtin:shapes?train=40&test=20&size=16",
               "--backbone", "tiny", "--image-size", "16", "--epochs", "3", "--batch-size", "10", "--precision",
               "fp32", "--out", str(tmp_path / "run"), "--no-track", "--set", "method.queue_size=20",
               "method.proj_hidden_dim=16", "method.proj_dim=8", "train.num_threads=1", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert "\r" not in done.stdout and len(lines) <= 5, done.stdout  # 3 epoch lines and the result
    epochs = [line for line in lines if line.startswith("train: step ")]
    assert [line.split()[2] for line in epochs] == ["4/12", "8/12", "12/12"]
    assert all(word in epochs[0] for word in (" loss ", " lr ", " img/s ", " ETA "))


def test_line_mode_reports_figures_that_arrive_after_the_epochs_last_step(capsys):
    from vipr.engine.progress import Progress

    bar = Progress(total=4, bars=False, epoch_steps=2)
    for _ in range(4):
        bar.advance()
    bar.note("knn_top1 71.5")
    bar.report()
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "knn_top1 71.5" in lines[-1] and "step 4/4" in lines[-1]
