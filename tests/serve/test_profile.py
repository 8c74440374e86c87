"""vipr model profile: every field present and positive, parameters and FLOPs equal to PyTorch's and the counter's."""

import json

import pytest

from vipr.cli.main import main
from vipr.models.loading import load_backbone
from vipr.nas.flops import count_flops
from vipr.serve import profile
from vipr.serve.runtime import cached_export

FIELDS = ("params", "flops", "file_bytes", "latency_ms", "throughput", "peak_memory_bytes")


@pytest.fixture(scope="module")
def float_report(digits_classifier):
    return profile.profile(digits_classifier, runs=3, warmup=1, threads=1)


def test_fields_present_and_positive(float_report):
    assert all(float_report[key] > 0 for key in FIELDS), float_report
    assert (float_report["task"], float_report["dtype"], float_report["image_size"]) == ("classifier", "float32", 32)
    assert (float_report["batch"], float_report["runs"], float_report["threads"]) == (16, 3, 1)


def test_params_and_flops_are_torch_and_the_counter(float_report, digits_classifier):
    model, card = load_backbone(digits_classifier)
    assert float_report["params"] == sum(p.numel() for p in model.parameters())
    assert float_report["flops"] == count_flops(model, card.image_size)


def test_another_image_size_counts_and_times_at_it(digits_classifier):
    report = profile.profile(digits_classifier, image_size=16, runs=1, warmup=0, threads=1)
    model, _ = load_backbone(digits_classifier)
    assert report["image_size"] == 16 and report["flops"] == count_flops(model, 16)


def test_an_int8_file_reports_its_accuracy_and_the_float_model_size(digits_classifier, float_report, tmp_path):
    from vipr.serve.quantize import quantize_file

    out = tmp_path / "m.onnx"
    quantize_file(cached_export(digits_classifier), out, calibration_images=32, eval_images=32)
    report = profile.profile(out, runs=2, warmup=1, threads=1)
    assert report["dtype"] == "int8" and report["accuracy"]["metric"] == "top1"
    assert (report["params"], report["flops"]) == (float_report["params"], float_report["flops"])
    assert report["file_bytes"] < float_report["file_bytes"] and report["file"] == str(out)


def test_cli_json(digits_classifier, capsys):
    assert main(["model", "profile", str(digits_classifier.parent), "--runs", "2", "--threads", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("under onnxruntime " + json.loads(lines[-1])["onnxruntime"] + " on the CPU (1 threads)")
    assert json.loads(lines[-1])["params"] > 0 and any(line.strip().startswith("throughput") for line in lines)


@pytest.mark.parametrize("args, message", [
    (["no-such-model"], "no such file or folder, and workspace"),
    (["missing.onnx"], "missing.onnx not found; pass an existing .onnx file"),
    (["BAD"], "is not an ONNX file exported by vipr (InvalidProtobuf"),
    (["ONNX", "--image-size", "16"], "takes 32 px images only; profile its checkpoint"),
    (["ONNX", "--batch", "0"], "--batch must be an integer in 1..4096, got 0"),
])
def test_cli_bad_inputs_are_one_line(args, message, digits_classifier, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "workspace"))  # a workspace without a registry
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    files = {"BAD": str(tmp_path / "bad.onnx"), "ONNX": str(cached_export(digits_classifier))}
    assert main(["model", "profile", *[files.get(a, a) for a in args]]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
