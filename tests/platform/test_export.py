"""Export to ONNX and TorchScript: same outputs as PyTorch, metadata inside the file and beside it."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from vipr.cli.main import main
from vipr.engine.checkpoint import save_atomic
from vipr.engine.migrate import FORMAT_V1
from vipr.errors import CheckpointError, ExportError
from vipr.models import create_backbone
from vipr.models.loading import load_backbone
from vipr.serve import export


@pytest.fixture(scope="module")
def onnx_file(linear_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "linear.onnx"
    result = export.export_model(linear_run / "classifier.pt", "onnx", out, name="linear-tiny", version=3)
    return out, result


def random_batch(n, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_onnx_reproduces_torch_at_any_batch_size(onnx_file, linear_run):
    out, result = onnx_file
    model, _ = load_backbone(linear_run / "classifier.pt")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = random_batch(n)
        expected = model.eval()(x).detach().numpy()
        [actual] = session.run(None, {"input": x.numpy()})
        assert actual.shape == (n, 10)
        np.testing.assert_allclose(actual, expected, atol=1e-3 * max(1.0, np.abs(expected).max()))
    assert result["max_abs_diff"] <= result["tolerance"]
    assert session.get_outputs()[0].name == "logits"


def test_onnx_metadata_round_trip(onnx_file, linear_run):
    out, result = onnx_file
    beside = json.loads(out.with_name("linear.onnx.json").read_text())
    inside = export.read_onnx_metadata(out)
    assert inside == beside
    _, card = load_backbone(linear_run / "classifier.pt")
    assert inside["classes"] == list(card.classes) and inside["image_size"] == 16
    assert (inside["mean"], inside["std"]) == (list(card.mean), list(card.std))
    assert (inside["model_name"], inside["model_version"], inside["backbone"]) == ("linear-tiny", "3", "tiny")
    props = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(props.custom_metadata_map["classes"]) == list(card.classes)


def preprocess_from_metadata(image_bytes, rule):
    """A client's preprocessing written from the ONNX file's metadata alone (PIL and numpy, no vipr)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(image_bytes)).convert(rule["color"])
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    assert rule["resize"]["interpolation"] == "bilinear" and rule["resize"]["antialias"]  # PIL's BILINEAR is both
    square = image.crop((left, top, left + side, top + side)).resize(tuple(rule["resize"]["size"]),
                                                                     Image.Resampling.BILINEAR)
    pixels = np.asarray(square, np.float32)[:, :, [rule["channel_order"].index(c) for c in "RGB"]]  # (S, S, 3)
    x = (pixels * rule["scale"] - np.float32(rule["mean"])) / np.float32(rule["std"])
    assert (rule["layout"], rule["dtype"]) == ("NCHW", "float32")
    return x.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, S, S)


@pytest.mark.parametrize("size", [(40, 24), (11, 13)])  # shrunk and enlarged
def test_onnx_metadata_alone_reproduces_the_served_model(onnx_file, linear_run, size):
    import io

    import onnx
    from PIL import Image

    from vipr.serve.inputs import decode_image
    from vipr.serve.runtime import TorchRuntime

    out, _ = onnx_file
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    rule = json.loads(props["preprocessing"])
    buffer = io.BytesIO()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    [actual] = session.run(None, {"input": preprocess_from_metadata(buffer.getvalue(), rule)})
    torch_model = TorchRuntime.from_checkpoint(linear_run / "classifier.pt", precision="fp32")
    expected = torch_model.predict(torch_model.preprocess([decode_image(buffer.getvalue(), "x.png", 10**6)]))
    np.testing.assert_allclose(actual, expected, atol=1e-2 * max(1.0, np.abs(expected).max()))  # PIL vs torch: ~3e-3


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_of_a_backbone_gives_features(pretrain_run, tmp_path):
    out = tmp_path / "backbone.pt"
    result = export.export_model(pretrain_run, "torchscript", out)
    assert result["output"] == "features" and result["output_dim"] == 64
    model, _ = load_backbone(pretrain_run)
    x = random_batch(4)
    loaded = torch.jit.load(str(out))
    torch.testing.assert_close(loaded(x), model.eval()(x), atol=1e-4, rtol=1e-4)
    assert export.read_torchscript_metadata(out) == json.loads((tmp_path / "backbone.pt.json").read_text())


def test_without_metadata_or_format_a_clear_error(tmp_path):
    model = create_backbone("tiny")
    save_atomic({"format": FORMAT_V1, "meta": {"backbone": "tiny"}, "backbone": model.state_dict()}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="no image_size, mean, std in its metadata"):
        export.export_model(tmp_path / "m.pt", "onnx", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export.export_model(tmp_path / "m.pt", "tflite", tmp_path / "m.tflite")


def test_mismatch_removes_the_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        export.compare(np.zeros((2, 3)), np.ones((2, 3)), tmp_path / "m.onnx", "tiny")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_a_registered_model(client, linear_run, tmp_path, capsys):
    from vipr.platform import registry

    registry.register(linear_run, "export-demo", alias="prod", mlflow_client=client)
    out = tmp_path / "model.onnx"
    assert main(["model", "export", "export-demo@prod", "--format", "onnx", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model_name"] == "export-demo" and result["model_version"] == "1" and out.is_file()
