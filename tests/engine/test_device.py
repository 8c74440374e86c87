"""--device on every training, evaluation and serving command: one resolver, one-line refusals, recorded in the run."""

import json

import pytest
import torch
import yaml

from vipr.cli.main import main
from vipr.config import DEVICE, ConfigValueError, from_dict
from vipr.engine.device import resolve_device
from vipr.errors import ConfigError
from vipr.pretrain import build_config

DATA = "builtin:shapes?train=40&test=20&size=16"
NO_CUDA = "--device cuda: no CUDA device on this machine; use --device cpu or auto"


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_resolves_to_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_device_is_refused_in_one_line(no_gpu):
    with pytest.raises(ConfigError, match=f"^{NO_CUDA}$"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="--device cuda:1: no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="--device mps: no Apple MPS device on this machine; use --device cpu"):
        resolve_device("mps")


def test_cuda_index_beyond_the_machine_names_the_devices_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun, plain cuda is this process's GPU
    assert resolve_device("cuda") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_the_declared_names(name):
    assert DEVICE.allows(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "tpu", ""])
def test_other_names_fail_when_the_config_is_read(name):
    with pytest.raises(ConfigValueError, match="'train.device' must be one of auto, cpu, cuda, cuda:N, mps"):
        build_config({"train": {"device": name}})


@pytest.mark.parametrize("argv", [
    ["pretrain", "--data", DATA, "--backbone", "tiny", "--no-track"],
    ["nas", "search", "--data", DATA],
    ["nas", "train", "--data", DATA],
    ["eval", "knn", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16", "--data", DATA],
    ["eval", "finetune", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16", "--data", DATA],
    ["features", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16", "--data", DATA],
    ["quickstart", "--data", DATA],
    ["serve", "model.pt"],
], ids=lambda argv: "-".join(argv[:2]))
def test_every_command_refuses_cuda_here_before_any_work(argv, no_gpu, tmp_path, capsys):
    out = tmp_path / ("out.npy" if argv[0] == "features" else "run")
    extra = [] if argv[0] == "serve" else ["--out", str(out)]
    code = main([*argv, *extra, "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().endswith(NO_CUDA) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_device_reaches_the_run_folder(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "20", "--out", str(run), "--no-progress", "--no-track", "--device", "cpu",
                 "--set", "method.queue_size=20", "method.proj_hidden_dim=16", "method.proj_dim=8"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["device"] == "cpu"
    assert json.loads((run / "metrics.json").read_text())["device"] == "cpu"
    out = tmp_path / "knn"
    assert main(["eval", "knn", "--checkpoint", str(run), "--data", DATA, "--out", str(out), "--no-progress",
                 "--no-track", "--device", "cpu"]) == 0
    assert json.loads((out / "eval_config.json").read_text())["device"] == "cpu"
    assert json.loads((out / "metrics.json").read_text())["device"] == "cpu"


def test_nas_train_reads_its_device_key():
    from vipr.cli.main import build_parser
    from vipr.cli.nas_train_cmd import config_from_args

    args = build_parser().parse_args(["nas", "train", "--device", "cuda:3"])
    assert config_from_args(args).train.device == "cuda:3"


def test_serve_options_carry_the_device():
    from vipr.cli.main import build_parser
    from vipr.cli.options import ServeOptions, read_options

    args = build_parser().parse_args(["serve", "m", "--device", "cpu"])
    assert read_options(ServeOptions, args).device == "cpu"
    assert from_dict(ServeOptions, {}).device == "auto"


def test_onnx_serving_uses_cuda_only_where_onnxruntime_has_it(monkeypatch):
    import onnxruntime

    from vipr.serve.runtime import onnx_providers

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("auto") == ["CPUExecutionProvider"]  # a GPU, but a CPU-only onnxruntime: as before
    with pytest.raises(ConfigError, match="--device cuda: this onnxruntime cannot run on cuda.*--runtime torch"):
        onnx_providers("cuda")
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: both)
    assert onnx_providers("cuda:0")[0] == ("CUDAExecutionProvider", {"device_id": 0})
