"""ONNX export of detection and segmentation models: the file reproduces PyTorch, carries its metadata, serves."""

import io
import json

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from vipr.errors import ExportError
from vipr.serve import dense_export
from vipr.serve.app import create_app
from vipr.serve.export import export_model, read_onnx_metadata
from vipr.serve.runtime import OnnxRuntime, TorchRuntime
from vipr.transfer.build import load_transfer_model


def session(path):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_segmenter_reproduces_torch_at_any_batch_size(dense_runs, tmp_path):
    out = tmp_path / "seg.onnx"
    result = export_model(dense_runs["segment"], "onnx", out, name="seg", version=2)
    assert result["max_abs_diff"] <= result["tolerance"] and result["task"] == "segment"
    model, card = load_transfer_model(dense_runs["segment"])
    runner = session(out)
    for n in (1, 4):
        x = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(n))
        [logits] = runner.run(None, {"input": x.numpy()})
        expected = model(x).detach().numpy()
        assert logits.shape == (n, 4, 64, 64)
        np.testing.assert_allclose(logits, expected, atol=1e-3 * max(1.0, np.abs(expected).max()))
    inside = read_onnx_metadata(out)
    assert inside == json.loads(out.with_name("seg.onnx.json").read_text())
    assert (inside["classes"], inside["image_size"], inside["model_version"]) == (list(card.classes), 64, "2")
    assert inside["input"]["normalised"] is False and inside["preprocessing"]["letterbox"]["placement"] == "top-left"


@pytest.mark.parametrize("run, outputs", [("detect", ["boxes", "labels", "scores"]),
                                          ("instance", ["boxes", "labels", "scores", "masks"]),
                                          ("retinanet", ["boxes", "scores", "labels"])])  # RetinaNet's own order
def test_detectors_reproduce_torch_one_image_per_call(dense_runs, tmp_path, run, outputs):
    out = tmp_path / f"{run}.onnx"
    result = export_model(dense_runs[run], "onnx", out)
    assert result["outputs"] == outputs and result["detections_compared"] > 0
    assert result["max_abs_diff"] <= result["tolerance"] == pytest.approx(0.064)  # 1e-3 of the 64 px side
    model, card = load_transfer_model(dense_runs[run])
    spec, runner = card.architecture_kwargs, session(out)
    assert runner.get_inputs()[0].shape == [3, 64, 64] and [o.name for o in runner.get_outputs()] == outputs
    for seed in (11, 12):  # images unlike the traced and the checked ones
        image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(seed))
        expected = {key: value.detach().numpy() for key, value in model([image])[0].items()}
        actual = dict(zip(outputs, runner.run(None, {"input": image.numpy()})))
        check = dense_export.compare_detections(expected, actual, out, run, 64, score_thresh=spec["score_thresh"],
                                                detections_per_img=spec["detections_per_img"])
        assert check["detections_compared"] + check["detections_at_cut"] >= len(expected["scores"]) > 0


def test_an_image_without_detections_exports_and_compares(dense_runs, tmp_path):
    out = tmp_path / "frcnn.onnx"
    export_model(dense_runs["detect"], "onnx", out)
    model, _ = load_transfer_model(dense_runs["detect"])
    model.roi_heads.score_thresh = 1.0  # nothing passes: the exported graph must still run
    empty = {key: value.detach().numpy() for key, value in model([torch.zeros(3, 64, 64)])[0].items()}
    assert len(empty["scores"]) == 0
    assert dense_export.compare_detections(empty, dict(empty), out, "faster_rcnn", 64)["detections_compared"] == 0


def test_a_mistranslated_detector_is_refused_and_removed(tmp_path):
    out = tmp_path / "bad.onnx"
    out.write_bytes(b"x")
    found = {"boxes": np.array([[1, 2, 30, 40]], np.float32), "labels": np.array([1]),
             "scores": np.array([0.9], np.float32)}
    lowest = {"boxes": np.array([[1, 2, 30, 40], [5, 5, 9, 9]], np.float32), "labels": np.array([1, 2]),
              "scores": np.array([0.9, 0.2], np.float32)}
    moved = {**found, "boxes": found["boxes"] + 0.5}
    cut = {"score_thresh": 0.05, "detections_per_img": 2}  # the 0.2 detection is the last of a full set
    assert dense_export.compare_detections(found, lowest, out, "faster_rcnn", 64, **cut)["detections_at_cut"] == 1
    with pytest.raises(ExportError, match="1 of 2 exported detections without"):  # not full: 0.2 is a real one
        dense_export.compare_detections(found, lowest, out, "faster_rcnn", 64, score_thresh=0.05, detections_per_img=3)
    out.write_bytes(b"x")
    with pytest.raises(ExportError, match=r"faster_rcnn: 1 of 1 PyTorch and 1 of 1 exported detections without a "
                                          r"twin \(box corners within 0.064 px"):
        dense_export.compare_detections(found, moved, out, "faster_rcnn", 64, **cut)
    assert not out.exists()


def test_torchscript_of_a_dense_model_is_refused_in_one_line(dense_runs, tmp_path):
    with pytest.raises(ExportError, match=r"^a detect model \(faster_rcnn\) exports to ONNX only; use --format onnx"):
        export_model(dense_runs["detect"], "torchscript", tmp_path / "m.pt")


@pytest.mark.parametrize("run", ["instance", "segment"])
def test_onnx_runtime_serves_as_torch_does(dense_runs, tmp_path, run):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 90, 3), dtype=np.uint8)).save(buffer, "PNG")
    upload = [("files", (f"noise{k}.png", buffer.getvalue(), "image/png")) for k in range(2)]  # a batch of 2
    endpoint = "segment" if run == "segment" else "detect"
    answers = []
    for runtime in (TorchRuntime.open(dense_runs[run]), OnnxRuntime.from_checkpoint(dense_runs[run], tmp_path)):
        with TestClient(create_app(runtime, run)) as client:
            answer = client.post(f"/v1/models/{run}/{endpoint}", params={"score_threshold": 0.05}, files=upload)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json()["predictions"])
    assert type(runtime).__name__ == "DenseOnnxRuntime"
    for torch_answer, onnx_answer in zip(*answers):
        if run == "segment":
            assert onnx_answer["label_map"] == torch_answer["label_map"]
            continue
        assert len(onnx_answer["boxes"]) == len(torch_answer["boxes"]) > 0
        np.testing.assert_allclose(onnx_answer["boxes"], torch_answer["boxes"], atol=1e-3)
        np.testing.assert_allclose(onnx_answer["scores"], torch_answer["scores"], atol=1e-5)
        assert onnx_answer["labels"] == torch_answer["labels"]
