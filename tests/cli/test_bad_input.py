"""Bad input over the whole CLI: every numeric option, every path option, one clear line each.

For every command and numeric option: zero, negative, huge, non-numeric (and NaN / infinity for
floats) where the option does not allow them; for every path option: missing, unreadable,
read-only and wrong-kind paths. Each must exit non-zero with exactly one ``error:`` line that
names the option (or key) and the value or path, and no traceback. Most cases call
``vipr.cli.main.main`` in-process (one import of torch for all); a few run as subprocesses to
prove no traceback escapes a real process. Bad values fail before any work: the run folder
is never created.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vipr.cli.main import build_parser, main

DATA = "builtin:shapes?train=60&test=20&size=16"
HUGE = "1000000000000"
VALUES = {"zero": "0", "negative": "-1", "huge": HUGE, "text": "abc", "nan": "nan", "inf": "inf"}
ALL = ("zero", "negative", "huge", "text")
NO_ZERO = ("negative", "huge", "text")  # 0 is a valid value (a seed, "off")
FLOAT = ("nan", "inf")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# command -> option -> the values it must refuse (0 is left out where it is valid or, for
# pretrain / nas train / quickstart --epochs, where the training loop decides what it means).
NUMERIC = {
    **{command: {"--image-size": ALL, "--epochs": NO_ZERO, "--batch-size": ALL, "--lr": ALL + FLOAT,
                 "--seed": NO_ZERO, "--nproc-per-node": ALL} for command in ("pretrain", "distill")},
    "eval knn": {"--image-size": ALL, "--k": ALL, "--temperature": ALL + FLOAT},
    "eval linear": {"--image-size": ALL},
    "eval finetune": {"--image-size": ALL, "--epochs": ALL, "--batch-size": ALL, "--min-steps": NO_ZERO,
                      "--lr": ALL + FLOAT, "--seed": NO_ZERO},
    "eval fewshot": {"--image-size": ALL, "--ways": ALL, "--shots": ALL, "--queries": ALL, "--episodes": ALL,
                     "--seed": NO_ZERO},
    "features": {"--image-size": ALL, "--batch-size": ALL},
    "data split": {"--label-fraction": ALL + FLOAT, "--per-class": ALL, "--seed": NO_ZERO},
    "data register": {"--store-size": ALL},
    "nas search": {"--epochs": ALL, "--warmup-epochs": NO_ZERO, "--order": ALL, "--layers": ALL,
                   "--channels": ALL, "--batch-size": ALL, "--image-size": ALL, "--seed": NO_ZERO},
    "nas train": {"--epochs": NO_ZERO, "--channels": ALL, "--layers": ALL, "--batch-size": ALL,
                  "--lr": ALL + FLOAT, "--auxiliary-weight": NO_ZERO + FLOAT, "--drop-path": NO_ZERO + FLOAT,
                  "--cutout": NO_ZERO, "--image-size": ALL, "--seed": NO_ZERO},
    "serve": {"--port": ALL, "--max-batch-size": ALL, "--max-delay-ms": NO_ZERO + FLOAT, "--max-queue": ALL,
              "--max-pixels": ALL},
    "ui": {"--port": ALL},
    "quickstart": {"--epochs": NO_ZERO},
    "model alias": {"VERSION": ALL},
    "model profile": {"--image-size": ALL, "--batch": ALL, "--runs": ALL, "--threads": NO_ZERO},
    "runs list": {"--limit": ALL},
    **{f"transfer {task}": {"--trainable-stages": NO_ZERO, "--image-size": ALL, "--epochs": ALL, "--iters": ALL,
                            "--batch-size": ALL, "--lr": ALL + FLOAT, "--nproc-per-node": ALL, "--seed": NO_ZERO}
       for task in ("detect", "instance", "segment")},
    "transfer eval": {"--batch-size": ALL},
    "worker": {"--cpus": ALL + FLOAT, "--max-jobs": ALL, "--grace": NO_ZERO + FLOAT, "--exit-when-idle": NO_ZERO + FLOAT},
    "transfer predict": {"--score-thresh": NO_ZERO + FLOAT},
}
SCENES = "builtin:scenes?size=64&train=8&test=4"


def base_argv(command: str, option: str, out: Path) -> list[str]:
    """A command line that would run but for the option under test (written last)."""
    never, checkpoint = str(out / "never"), ["--checkpoint", "random", "--backbone", "tiny", "--data", DATA]
    argv = {
        "pretrain": ["pretrain", "--data", DATA, "--backbone", "tiny", "--out", never, "--no-track"],
        "data split": ["data", "split", DATA, "--out", str(out / "never.json")],
        "data register": ["data", "register", DATA, "--name", "never"],
        "nas search": ["nas", "search", "--data", DATA, "--out", never],
        "nas train": ["nas", "train", "--data", DATA, "--out", never],
        "serve": ["serve", "model.pt"],
        "model profile": ["model", "profile", str(out / "never.onnx")],
        "ui": ["ui"],
        "quickstart": ["quickstart", "--data", DATA, "--out", never],
        "runs list": ["runs", "list"],
        "worker": ["worker", *([] if option == "--exit-when-idle" else ["--exit-when-idle", "0"])],
        "features": ["features", *checkpoint, "--out", str(out / "never.npz")],
        "distill": ["distill", "--teacher", never, "--student", "tiny", "--data", DATA, "--out", never, "--no-track"],
        "transfer eval": ["transfer", "eval", "--checkpoint", never],
        "transfer predict": ["transfer", "predict", "x.png", "--checkpoint", never, "--out", never],
        **{f"transfer {t}": ["transfer", t, "--data", SCENES, "--backbone", "tiny", "--out", never, "--no-track"]
           for t in ("detect", "instance", "segment")},
    }.get(command) or [*command.split(), *checkpoint, "--out", never, "--no-track"]
    if command == "data split" and option not in ("--label-fraction", "--per-class"):
        argv += ["--per-class", "2"]
    return argv


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: usage errors
        code = stop.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names: str) -> str:
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert all(name in lines[0] for name in names), f"{names} not all in: {lines[0]}"
    return lines[0]


NUMERIC_CASES = [(command, option, kind) for command, options in NUMERIC.items()
                 for option, kinds in options.items() for kind in kinds]


@pytest.mark.parametrize("command, option, kind", NUMERIC_CASES,
                         ids=[f"{c.replace(' ', '-')}{o}={k}" for c, o, k in NUMERIC_CASES])
def test_bad_number_is_one_line_naming_option_and_value(command, option, kind, tmp_path, capsys):
    value = VALUES[kind]
    if command == "model alias":
        argv, name = ["model", "alias", "m", value, "a"], "VERSION"
    else:
        argv, name = [*base_argv(command, option, tmp_path), option, value], option
    code, err = run_cli(argv, capsys)
    line = assert_one_line_error(code, err, name)
    assert value in line or (kind == "text" and "abc" in line), line
    assert not (tmp_path / "never").exists()  # refused before any work


def test_the_table_covers_every_numeric_option_of_every_command():
    found = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.type in (int, float):
                name = action.option_strings[0] if action.option_strings else action.metavar
                found.setdefault(parser.prog.removeprefix("vipr "), set()).add(name)

    walk(build_parser())
    assert found == {command: set(options) for command, options in NUMERIC.items()}


def commands_with(option: str, parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Every (sub)command that takes ``option``, as ``eval knn``."""
    found = []
    for action in (parser or build_parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += commands_with(option, sub)
        elif option in action.option_strings:
            found.append(parser.prog.removeprefix("vipr "))
    return found


DEVICE_COMMANDS = commands_with("--device", build_parser())


def test_every_training_evaluation_and_serving_command_takes_device():
    assert set(DEVICE_COMMANDS) == {"pretrain", "nas search", "nas train", "eval knn", "eval linear", "eval finetune",
                                    "eval fewshot", "features", "serve", "quickstart", "distill", "transfer detect",
                                    "transfer instance", "transfer segment", "transfer eval", "transfer predict"}


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
@pytest.mark.parametrize("value", ["gpu", "cuda:x", "0"])
def test_a_bad_device_is_one_line_naming_it(command, value, tmp_path, capsys):
    code, err = run_cli([*base_argv(command, "--device", tmp_path), "--device", value], capsys)
    assert value in assert_one_line_error(code, err, "--device")
    assert not (tmp_path / "never").exists()


# ---- paths ---------------------------------------------------------------------------------------

@pytest.fixture
def paths(tmp_path) -> dict[str, Path]:
    """One path of each kind: missing, a text file, an empty folder, garbage, unreadable, read-only, under a file."""
    text = tmp_path / "notes.txt"
    text.write_text("some notes, not data\n")
    folder = tmp_path / "empty"
    folder.mkdir()
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("train:\n  epochs: 1\n bad: [\n")  # neither YAML nor JSON nor a checkpoint
    unreadable = tmp_path / "unreadable.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    yield {"missing": tmp_path / "missing", "file": text, "dir": folder, "garbage": garbage,
           "unreadable": unreadable, "read_only": read_only / "out", "under_file": text / "out"}
    read_only.chmod(0o755)


def read_only_target(paths: dict[str, Path]) -> Path:
    """A path no folder can be made at: chmod 555 for a normal user; /sys for root (chmod does not stop root)."""
    if not IS_ROOT:
        return paths["read_only"]
    target = Path("/sys/vipr-read-only-probe")
    try:
        target.mkdir()
    except OSError:
        return target / "out"
    target.rmdir()
    pytest.skip("running as root and /sys is writable here: no read-only folder to test with")


CHECKPOINT = ["--checkpoint", "random", "--backbone", "tiny", "--image-size", "16"]
PATH_CASES = [  # argv with {P} for the path under test, the kinds to try
    ("pretrain --data {P} --backbone tiny --out {OUT} --no-track", ("missing", "file", "dir", "unreadable")),
    ("pretrain --out {P} --no-track", ("read_only", "file", "under_file")),
    ("pretrain --config {P} --out {OUT}", ("missing", "dir", "garbage", "unreadable")),
    ("pretrain --init-weights {P} --data " + DATA + " --backbone tiny --out {OUT} --no-track",
     ("missing", "dir", "unreadable")),
    ("eval finetune --init-weights {P} --no-track --data " + DATA + " " + " ".join(CHECKPOINT),
     ("missing", "dir", "garbage", "unreadable")),
    ("eval knn --checkpoint {P} --data " + DATA, ("missing", "dir", "garbage", "file")),
    ("eval knn --data {P} " + " ".join(CHECKPOINT), ("missing", "file")),
    ("eval knn --label-split {P} --data " + DATA + " " + " ".join(CHECKPOINT), ("missing", "dir", "garbage",
                                                                                  "unreadable")),
    ("eval linear --out {P} --no-track --data " + DATA + " " + " ".join(CHECKPOINT), ("read_only", "file",
                                                                                        "under_file")),
    ("eval finetune --out {P} --no-track --data " + DATA + " " + " ".join(CHECKPOINT), ("read_only", "file")),
    ("eval fewshot --out {P} --no-track --data " + DATA + " " + " ".join(CHECKPOINT), ("read_only", "file")),
    ("features --checkpoint {P} --out {OUT}.npz --data " + DATA, ("missing", "dir", "garbage", "file")),
    ("features --data {P} --out {OUT}.npz " + " ".join(CHECKPOINT), ("missing", "file")),
    ("features --out {P}.npz --data " + DATA + " " + " ".join(CHECKPOINT), ("read_only", "under_file")),
    ("features --out {P} --data " + DATA + " " + " ".join(CHECKPOINT), ("dir",)),
    ("data info {P}", ("missing", "file", "dir", "unreadable")),
    ("data split {P} --per-class 1 --out {OUT}.json", ("missing", "file")),
    ("data split " + DATA + " --per-class 1 --out {P}", ("read_only", "dir", "under_file")),
    ("nas search --data {P} --out {OUT}", ("missing", "file")),
    ("nas search --out {P}", ("read_only", "file")),
    ("nas search --config {P} --out {OUT}", ("garbage", "dir")),
    ("nas train {P} --out {OUT}", ("missing", "dir", "garbage", "unreadable")),
    ("nas train --genotype {P} --out {OUT}", ("missing",)),
    ("nas train --out {P}", ("read_only", "file")),
    ("quickstart --out {P}", ("read_only", "file")),
    ("model register {P} --name m", ("missing",)),
    ("model export m --format onnx --out {P}", ("read_only", "dir", "under_file")),
    ("serve {P}.pt", ("missing",)),
    ("serve {P} --runtime torch --port 1", ("garbage",)),  # port 1: free to bind as root, never bound
    ("runs plot some-run --out {P}", ("read_only", "dir", "under_file")),  # before the workspace is read
    ("transfer detect --data {P} --backbone tiny --out {OUT} --no-track", ("missing", "file")),
    ("transfer detect --checkpoint {P} --data " + SCENES + " --out {OUT} --no-track", ("missing", "dir", "garbage")),
    ("transfer segment --out {P} --data " + SCENES + " --backbone tiny --no-track", ("read_only", "file")),
    ("transfer eval --checkpoint {P}", ("missing", "dir", "garbage")),
    ("transfer predict {P} --checkpoint {P}", ("missing",)),
]
PATH_IDS = [f"{argv.split(' {P}')[0].replace(' ', '-')}={kind}" for argv, kinds in PATH_CASES for kind in kinds]


@pytest.mark.parametrize("template, kind", [(a, k) for a, kinds in PATH_CASES for k in kinds], ids=PATH_IDS)
def test_bad_path_is_one_line_naming_it(template, kind, paths, tmp_path, capsys):
    if kind == "unreadable" and IS_ROOT:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    if kind == "garbage" and template.startswith("serve") and IS_ROOT is False and os.name != "posix":
        pytest.skip("port 1 needs root on this system")
    path = read_only_target(paths) if kind == "read_only" else paths[kind]
    argv = template.replace("{P}", str(path)).replace("{OUT}", str(tmp_path / "never")).split()
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, str(path))
    assert not (tmp_path / "never").exists()  # a bad input leaves no run folder behind


# ---- real processes ------------------------------------------------------------------------------

SUBPROCESS_CASES = [  # a few, end to end: exit status, one line, no traceback from any layer
    (["eval", "knn", *CHECKPOINT, "--data", DATA, "--k", "0"], 1, "--k must be an integer in [1, 10000000], got 0"),
    (["data", "split", DATA, "--label-fraction", "1.5", "--out", "x.json"], 1, "--label-fraction must be a number"),
    (["pretrain", "--batch-size", "0"], 1, "--batch-size (train.batch_size) must be an integer in [1, 1048576]"),
    (["pretrain", "--epoch", "3"], 2, "unrecognized argument: --epoch (did you mean --epochs?)"),
]


@pytest.mark.parametrize("argv, status, message", SUBPROCESS_CASES, ids=[" ".join(a[:2]) for a, _, _ in SUBPROCESS_CASES])
def test_a_real_process_exits_with_one_line(argv, status, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "vipr.cli.main", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, env={**os.environ, "VIPR_TRACKING": "0"})
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr.splitlines()[-1], done.stderr
    assert not (tmp_path / "runs").exists()
