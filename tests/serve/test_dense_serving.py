"""Detection and segmentation models registered, resolved and served: /detect, /segment, infer, errors, token."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from vipr.cli.serve_cmd import resolve
from vipr.serve.app import create_app
from vipr.serve.runtime import load_runtime
from vipr.transfer.build import load_transfer_model
from vipr.transfer.predict import predict_files

from .conftest import SCENES

WIDTH, HEIGHT = 120, 72  # a wide image: letterboxed to 64 x 38 on the canvas, answers scaled back x1.875


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The MLflow client of a fresh workspace for this module ($VIPR_HOME)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VIPR_HOME", str(tmp_path_factory.mktemp("vipr-home")))
    for name in ("VIPR_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        patch.delenv(name, raising=False)
    from vipr.platform import workspace

    yield workspace.client()
    patch.undo()


@pytest.fixture(scope="module")
def registered(workspace, dense_runs):
    from vipr.platform import registry

    return {task: registry.register(dense_runs[task], f"scenes-{task}", alias="prod", mlflow_client=workspace)
            for task in ("detect", "instance", "segment")}


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A scenes test image stretched to WIDTH x HEIGHT, as a PNG file."""
    from vipr.data.dense.sources import open_dense

    pixels = open_dense(SCENES).test.images[0].transpose(1, 2, 0)  # (64, 64, 3) uint8
    path = tmp_path_factory.mktemp("images") / "wide.png"
    Image.fromarray(pixels).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR).save(path)
    return path


@pytest.fixture
def serve_model(registered):
    """``serve_model(task, **create_app_kwargs) -> TestClient`` of the registered ``scenes-<task>@prod``."""
    clients = []

    def start(task, **kwargs):
        path, name, version = resolve(f"scenes-{task}@prod")
        client = TestClient(create_app(load_runtime(path, "torch"), name, model_version=version, **kwargs))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def files(path, name="wide.png"):
    return [("files", (name, path.read_bytes(), "image/png"))]


def reference(run, image_file, tmp_path, score_thresh=0.05):
    """vipr.transfer.predict's answer on the same file: its COCO results (or label map) in source pixels."""
    model, card = load_transfer_model(run)
    out = tmp_path / "pred"
    predict_files(model, card, [str(image_file)], out, torch.device("cpu"), score_thresh=score_thresh)
    return json.loads((out / "predictions.json").read_text()), card, out


def test_registry_records_the_task(registered, workspace):
    from vipr.platform import registry

    tags = registered["instance"]["tags"]
    assert (tags["task"], tags["architecture"], tags["backbone"]) == ("instance", "mask_rcnn", "tiny")
    assert registered["segment"]["task"] == "segment" and registered["segment"]["output"] == "label map"
    rows = {row["name"]: row for row in registry.list_models(workspace)}
    assert (rows["scenes-detect"]["task"], rows["scenes-detect"]["output"]) == ("detect", "boxes")
    assert rows["scenes-segment"]["backbone"] == "tiny"


def test_cli_lists_and_exports_a_registered_dense_model(registered, tmp_path, capsys):
    from vipr.cli.main import main

    assert main(["model", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("scenes-instance "))
    assert row.split()[3:7] == ["prod->1", "instance", "boxes+masks", "tiny"]
    out = tmp_path / "segment.onnx"
    assert main(["model", "export", "scenes-segment@prod", "--format", "onnx", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["task"], result["model_name"], result["model_version"]) == ("segment", "scenes-segment", "1")
    assert result["max_abs_diff"] <= result["tolerance"] and out.is_file()


@pytest.mark.parametrize("task", ["detect", "instance"])
def test_detect_answers_in_source_pixels_as_transfer_predict(serve_model, dense_runs, image_file, tmp_path, task):
    client = serve_model(task)
    answer = client.post(f"/v1/models/scenes-{task}/detect", params={"score_threshold": 0.05}, files=files(image_file))
    assert answer.status_code == 200, answer.text
    [found] = answer.json()["predictions"]
    expected, card, _ = reference(dense_runs[task], image_file, tmp_path)
    assert (found["file"], found["width"], found["height"]) == ("wide.png", WIDTH, HEIGHT)
    assert len(found["boxes"]) == len(expected) > 0
    category_ids = card.extra["category_ids"]
    for k, result in enumerate(expected):  # both in the model's order: score, highest first
        x, y, w, h = result["bbox"]
        np.testing.assert_allclose(found["boxes"][k], [x, y, x + w, y + h], atol=1e-3)
        assert category_ids[found["label_ids"][k]] == result["category_id"]
        assert found["labels"][k] == card.classes[found["label_ids"][k]]
        assert found["scores"][k] == pytest.approx(result["score"], abs=1e-5)
        if task == "instance":
            assert found["masks"][k] == result["segmentation"]  # the same COCO RLE, {size: [H, W], counts}
    boxes = np.asarray(found["boxes"])
    assert boxes[:, [0, 2]].max() <= WIDTH + 1e-3 and boxes[:, [1, 3]].max() <= HEIGHT + 1e-3 and boxes.min() >= 0
    if task == "instance":
        assert mask_utils.decode(found["masks"][0]).shape == (HEIGHT, WIDTH)


def test_detect_threshold_and_limit_from_query_or_form(serve_model, image_file):
    client = serve_model("detect")
    url = "/v1/models/scenes-detect/detect"
    loose = client.post(url, params={"score_threshold": 0}, files=files(image_file)).json()["predictions"][0]
    assert len(loose["scores"]) > 3
    top = client.post(url, data={"score_threshold": "0", "max_detections": "3"}, files=files(image_file)).json()
    assert top["max_detections"] == 3 and top["predictions"][0]["scores"] == loose["scores"][:3]
    strict = client.post(url, files=files(image_file)).json()  # defaults 0.5 and 100
    assert strict["score_threshold"] == 0.5 and all(s >= 0.5 for s in strict["predictions"][0]["scores"])


def test_segment_png_and_rle_in_source_pixels(serve_model, dense_runs, image_file, tmp_path):
    client = serve_model("segment")
    answer = client.post("/v1/models/scenes-segment/segment", files=files(image_file))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["format"] == "png" and body["classes"][0] == "background"
    label_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["predictions"][0]["label_map"]))))
    assert label_map.shape == (HEIGHT, WIDTH) and label_map.max() < len(body["classes"])
    _, _, out = reference(dense_runs["segment"], image_file, tmp_path)
    np.testing.assert_array_equal(label_map, np.asarray(Image.open(out / "wide_labels.png")))
    rle = client.post("/v1/models/scenes-segment/segment", params={"format": "rle"}, files=files(image_file)).json()
    masks = rle["predictions"][0]["masks"]
    for mask in masks:
        np.testing.assert_array_equal(mask_utils.decode(mask), label_map == mask["label_id"])
        assert mask["label"] == body["classes"][mask["label_id"]]
        assert mask["pixels"] == (label_map == mask["label_id"]).sum()
    assert sum(m["pixels"] for m in masks) == WIDTH * HEIGHT


def test_several_images_in_one_request_and_the_batch(serve_model, image_file):
    client = serve_model("detect")
    square = io.BytesIO()
    Image.open(image_file).resize((50, 50)).save(square, format="JPEG")
    both = files(image_file) + [("files", ("square.jpg", square.getvalue(), "image/jpeg"))]
    answer = client.post("/v1/models/scenes-detect/detect", params={"score_threshold": 0}, files=both).json()
    assert [(p["file"], p["width"], p["height"]) for p in answer["predictions"]] == [("wide.png", 120, 72),
                                                                                      ("square.jpg", 50, 50)]
    assert list(client.app.state.serve.batcher.batch_sizes) == [1, 2]  # the warm-up, then both images at once
    text = client.get("/metrics").text
    assert 'vipr_serve_requests_total{endpoint="/v1/models/{name}/detect",status="200"} 1.0' in text


@pytest.mark.parametrize("task, path, params, status, message", [
    ("segment", "detect", {}, 400, "use POST /v1/models/scenes-segment/segment"),
    ("detect", "segment", {}, 400, "use POST /v1/models/scenes-detect/detect"),
    ("detect", "classify", {}, 400, "use POST /v1/models/scenes-detect/detect"),
    ("detect", "detect", {"score_threshold": "1.5"}, 400, "score_threshold='1.5'"),
    ("detect", "detect", {"score_threshold": "high"}, 400, "a number in [0.0, 1.0]"),
    ("detect", "detect", {"max_detections": "0"}, 400, "an integer in [1, 10000]"),
    ("segment", "segment", {"format": "jpeg"}, 400, "format=png"),
])
def test_wrong_endpoint_or_parameter_is_a_4xx_naming_the_fix(serve_model, image_file, task, path, params, status,
                                                             message):
    client = serve_model(task)
    answer = client.post(f"/v1/models/scenes-{task}/{path}", params=params, files=files(image_file))
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert "\n" not in answer.json()["error"]


def test_bad_images_and_the_server_goes_on(serve_model, image_file):
    client = serve_model("instance", max_pixels=100 * 100)
    url = "/v1/models/scenes-instance/detect"
    answer = client.post(url, files=[("files", ("x.png", b"not an image", "image/png"))])
    assert answer.status_code == 400 and "'x.png' is not an image" in answer.json()["error"]
    big = io.BytesIO()
    Image.new("RGB", (200, 100)).save(big, format="PNG")
    assert client.post(url, files=[("files", ("big.png", big.getvalue(), "image/png"))]).status_code == 413
    assert client.post(url).status_code == 400  # no files
    assert client.post("/v1/models/nope/detect", files=files(image_file)).status_code == 404
    assert client.post(url, files=files(image_file)).status_code == 200


def test_token_guards_the_dense_endpoints(serve_model, image_file, monkeypatch):
    monkeypatch.setenv("VIPR_SERVE_TOKEN", "s3cret")
    client = serve_model("segment")
    url = "/v1/models/scenes-segment/segment"
    answer = client.post(url, files=files(image_file))
    assert answer.status_code == 401 and "Bearer" in answer.json()["error"]
    assert client.post(url, files=files(image_file), headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_infer_and_metadata_of_dense_models(serve_model):
    detector, segmenter = serve_model("instance"), serve_model("segment")
    meta = detector.get("/v2/models/scenes-instance").json()
    assert meta["parameters"]["task"] == "instance" and meta["versions"] == ["1"]
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "labels", "scores", "masks", "batch_index"]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8)
    body = {"inputs": [{"name": "input_uint8", "shape": [2, 3, 64, 64], "datatype": "UINT8",
                        "data": pixels.reshape(-1).tolist()}]}
    outputs = {o["name"]: o for o in detector.post("/v2/models/scenes-instance/infer", json=body).json()["outputs"]}
    n = outputs["scores"]["shape"][0]
    assert outputs["boxes"]["shape"] == [n, 4] and outputs["masks"]["shape"] == [n, 1, 64, 64] and n > 0
    assert outputs["labels"]["datatype"] == "INT64" and set(outputs["batch_index"]["data"]) <= {0, 1}
    x = (pixels / 255).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": [2, 3, 64, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    [logits] = segmenter.post("/v2/models/scenes-segment/infer", json=body).json()["outputs"]
    runtime = segmenter.app.state.serve.runtime
    assert logits["shape"] == [2, 4, 64, 64]
    np.testing.assert_allclose(np.reshape(logits["data"], (2, 4, 64, 64)), runtime.predict(x), atol=1e-3)
