"""INT8 export: close to the float model, its reported accuracy a true count, the fallbacks, serving, bad inputs."""

import io
import json
import shutil

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from vipr.cli.main import main
from vipr.data.sources import open_dataset
from vipr.errors import DataError, ExportError
from vipr.serve import quantize
from vipr.serve.export import read_onnx_metadata
from vipr.serve.runtime import OnnxRuntime, TorchRuntime, cached_export

TINY_DATA = "builtin:shapes?train=40&test=20&size=16"  # tests/conftest.py's


@pytest.fixture(scope="module")
def float_file(digits_classifier, tmp_path_factory):
    return cached_export(digits_classifier, tmp_path_factory.mktemp("float"))


@pytest.fixture(scope="module")
def int8_file(float_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "digits.int8.onnx"
    return out, quantize.quantize_file(float_file, out)  # calibrated on the card's data: builtin:digits


def digits_test_inputs(metadata):
    """The test split of builtin:digits, normalised by hand from the metadata (the images are already 32 px)."""
    split = open_dataset("builtin:digits").test
    mean = np.float32(metadata["mean"])[:, None, None]
    std = np.float32(metadata["std"])[:, None, None]
    return ((split.images / np.float32(255) - mean) / std).astype(np.float32), split.labels


def logits(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_int8_agrees_with_the_float_onnx_and_torch(int8_file, float_file, digits_classifier):
    out, _ = int8_file
    x, _ = digits_test_inputs(read_onnx_metadata(float_file))
    x = x[:120]
    int8, float_ = logits(out, x).argmax(1), logits(float_file, x).argmax(1)
    torch_model = TorchRuntime.from_checkpoint(digits_classifier, precision="fp32")
    torch_top1 = torch_model.predict(x).argmax(1)
    assert np.array_equal(float_, torch_top1)
    assert (int8 == float_).mean() >= 0.95 and (int8 == torch_top1).mean() >= 0.95


def test_reported_accuracy_is_an_independent_count(int8_file, float_file):
    out, result = int8_file
    x, labels = digits_test_inputs(result)
    float_top1 = 100 * (logits(float_file, x).argmax(1) == labels).mean()
    int8_top1 = 100 * (logits(out, x).argmax(1) == labels).mean()
    acc = result["quantization"]["accuracy"]
    assert (acc["metric"], acc["images"], acc["data"]) == ("top1", len(labels), "builtin:digits")
    assert acc["float"] == pytest.approx(float_top1, abs=1e-3) and acc["int8"] == pytest.approx(int8_top1, abs=1e-3)
    assert acc["delta"] == pytest.approx(int8_top1 - float_top1, abs=1e-3) and acc["delta"] >= -quantize.MAX_DROP


def test_settings_and_metadata_inside_and_beside(int8_file, float_file):
    out, result = int8_file
    inside, beside = read_onnx_metadata(out), json.loads(out.with_name(out.name + ".json").read_text())
    assert inside == beside == {k: v for k, v in result.items() if k != "file"}
    q = inside.pop("quantization")
    assert inside == read_onnx_metadata(float_file)  # everything a client reads is the float export's
    assert (q["mode"], q["format"], q["activations"], q["per_channel"]) == ("static", "QDQ", "uint8", True)
    assert q["float_nodes"] == ["/head/Gemm"] and q["calibration"]["images"] == 256
    tried = q["tried"]  # int8 weights first; uint8 only where int8 lost more than a point, and the better kept
    assert tried[0]["weights"] == "int8" and (len(tried) == 1) == (tried[0]["delta"] >= -quantize.MAX_DROP)
    assert q["weights"] == max(tried, key=lambda t: t["delta"])["weights"]
    assert out.stat().st_size < 0.5 * float_file.stat().st_size


class FakeJudge:
    """Stands in for quantize.Judge: its scores are given, in order."""

    def __init__(self, task, deltas, data):
        self.task, self.single, self.data, self.deltas = task, task == "detect", data, list(deltas)

    def score(self, path):
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # a loadable file
        return {"metric": "top1", "delta": self.deltas.pop(0)}


@pytest.fixture(scope="module")
def tiny_data(float_file):
    from vipr.serve.quantize_data import load_data

    return load_data(read_onnx_metadata(float_file), None, None, calibration_images=16, eval_images=8)


@pytest.mark.parametrize("deltas, kept, tried", [([-0.5], "int8", 1), ([-5.0, -0.2], "uint8", 2),
                                                 ([-5.0, -7.0], "int8", 2)])
def test_uint8_weights_only_where_int8_loses_over_a_point(float_file, tiny_data, tmp_path, deltas, kept, tried):
    shutil.copyfile(float_file, tmp_path / "prepared.onnx")
    settings = quantize._static(tmp_path / "prepared.onnx", tmp_path / "out.onnx", FakeJudge("classifier", deltas,
                                                                                             tiny_data), 0)
    assert settings["weights"] == kept and len(settings["tried"]) == tried and (tmp_path / "out.onnx").is_file()


def test_a_detector_falls_back_to_dynamic_with_the_reason(float_file, tiny_data, tmp_path, monkeypatch):
    def static_fails(*args):
        raise ValueError("No data is collected.\nsecond line")

    monkeypatch.setattr(quantize, "_static", static_fails)
    shutil.copyfile(float_file, tmp_path / "prepared.onnx")
    settings = quantize._quantize(tmp_path / "prepared.onnx", tmp_path / "out.onnx", FakeJudge("detect", [0.0],
                                                                                                tiny_data), 0)
    assert settings["mode"] == "dynamic" and settings["calibration"] is None
    assert settings["reason"].endswith("(ValueError: No data is collected.)")
    assert logits(tmp_path / "out.onnx", tiny_data.held_out).shape == (8, 10)
    with pytest.raises(ExportError, match="static INT8 quantization failed: ValueError: No data is collected."):
        quantize._quantize(tmp_path / "prepared.onnx", tmp_path / "x.onnx", FakeJudge("classifier", [], tiny_data), 0)


def test_a_backbone_is_measured_by_knn_and_cosine(pretrain_run, tmp_path):
    result = quantize.quantize_file(cached_export(pretrain_run, tmp_path), tmp_path / "b.onnx",
                                    calibration_data=TINY_DATA)
    acc = result["quantization"]["accuracy"]
    assert acc["metric"] == "knn_top1" and (acc["bank"], acc["images"]) == (40, 20) and acc["k"] == 20
    x = OnnxRuntime(tmp_path / "b.onnx").preprocess(list(open_dataset(TINY_DATA).test.images))
    a, b = logits(cached_export(pretrain_run, tmp_path), x), logits(tmp_path / "b.onnx", x)
    cosine = np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    assert acc["cosine"] == pytest.approx(cosine, abs=1e-5) and cosine > 0.9


def test_serving_answers_with_the_int8_model(digits_classifier, int8_file, serve, tmp_path):
    cache = tmp_path / "cache"
    served = quantize.cached_quantized(digits_classifier, cache)
    assert quantize.cached_quantized(digits_classifier, cache) == served  # made once
    assert quantize.cached_quantized(served, cache) == served  # an int8 file serves as it is
    runtime = OnnxRuntime(served)
    assert read_onnx_metadata(served)["quantization"]["dtype"] == "int8"
    client = serve(runtime=runtime)
    image = open_dataset("builtin:digits").test.images[0]  # (3, 32, 32)
    buffer = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="PNG")
    answer = client.post("/v1/models/linear-tiny/classify?k=1", files={"files": ("d.png", buffer.getvalue())})
    assert answer.status_code == 200, answer.text
    expected = runtime.predict(runtime.preprocess([image])).argmax(1)[0]
    assert answer.json()["predictions"][0]["top"][0]["index"] == expected
    assert client.get("/v2/models/linear-tiny").json()["platform"] == "onnxruntime_onnx"


def test_cli_export_prints_the_comparison(digits_classifier, int8_file, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["model", "export", str(digits_classifier), "--format", "onnx", "--quantize", "int8",
                 "--out", str(out), "--eval-data", "builtin:digits", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert lines[1].startswith("top1 on 360 held-out images of builtin:digits: float ")
    assert result["quantization"]["accuracy"] == int8_file[1]["quantization"]["accuracy"]  # deterministic
    assert result["max_abs_diff"] <= result["tolerance"] and out.is_file()


@pytest.mark.parametrize("flags, message", [
    (["--format", "torchscript", "--quantize", "int8"], "--quantize int8 needs --format onnx"),
    (["--format", "onnx", "--calibration-data", "builtin:digits"], "--calibration-data is read by --quantize"),
    (["--format", "onnx", "--quantize", "int8", "--calibration-data", TINY_DATA],
     ("its images are 16x16 px but the model takes 32x32; pass images at the model's size or the data it "
      "was trained on (builtin:digits)")),
    (["--format", "onnx", "--quantize", "int8", "--calibration-data", "builtin:shapes?train=8&test=0&size=32"],
     "has no test split to compare the float and int8 models on; pass --eval-data"),
])
def test_cli_bad_inputs_are_one_line(digits_classifier, tmp_path, capsys, flags, message):
    assert main(["model", "export", str(digits_classifier), "--out", str(tmp_path / "m.onnx"), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_serve_quantize_needs_the_onnx_runtime(classifier_path, capsys):
    assert main(["serve", str(classifier_path), "--quantize", "int8", "--runtime", "torch"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--quantize int8 runs on --runtime onnx" in err


def test_images_of_another_channel_count_are_refused():
    with pytest.raises(DataError, match="its images have 1 channels, the model takes 3"):
        from vipr.serve.quantize_data import check_images

        check_images((4, 1, 32, 32), {"image_size": 32}, "x", "--calibration-data")
