"""The HTTP app through FastAPI's TestClient: OIP v2 endpoints, classify, metrics, token, bad input."""

import io

import numpy as np
import pytest
from PIL import Image

from .conftest import MODEL, GatedRuntime

SIZE = 16  # the tiny classifier's image_size


def oip_body(array, datatype="FP32", shape=None):
    return {"inputs": [{"name": "input", "shape": list(shape or array.shape), "datatype": datatype,
                        "data": array.reshape(-1).tolist()}]}


def image_file(mode="RGB", size=(40, 24), fmt="PNG", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_health_and_metadata(serve, torch_runtime):
    client = serve()
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {("input", "FP32"), ("input_uint8", "UINT8")}
    assert all(i["shape"] == [-1, 3, SIZE, SIZE] for i in meta["inputs"])
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["classes"] == list(torch_runtime.info.classes)


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_infer_fp32_and_uint8_match_the_runtime(serve, request, kind):
    runtime = request.getfixturevalue(f"{kind}_runtime")
    client = serve(runtime)
    x = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    answer = client.post(f"/v2/models/{MODEL}/infer", json=oip_body(x)).json()
    [out] = answer["outputs"]
    assert answer["model_name"] == MODEL and out["name"] == "logits" and out["shape"] == [3, 10]
    np.testing.assert_allclose(np.reshape(out["data"], (3, 10)), runtime.predict(x), atol=2e-2)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 3, SIZE, SIZE), dtype=np.uint8)
    [out] = client.post(f"/v2/models/{MODEL}/infer", json=oip_body(pixels, "UINT8")).json()["outputs"]
    expected = runtime.predict(runtime.preprocess(list(pixels)))
    np.testing.assert_allclose(np.reshape(out["data"], (2, 10)), expected, atol=2e-2)


def test_infer_echoes_the_request_id(serve):
    client = serve()
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"id": "req-42", **oip_body(x)}).json()
    assert answer["id"] == "req-42" and answer["model_version"] == "1"  # OIP v2: the response carries the id
    assert "id" not in client.post(f"/v2/models/{MODEL}/infer", json=oip_body(x)).json()
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"id": 7, **oip_body(x)})
    assert answer.status_code == 400 and "id must be a string" in answer.json()["error"]


def test_classify_png_and_jpeg(serve, torch_runtime):
    client = serve()
    files = [("files", ("a.png", image_file(), "image/png")),
             ("files", ("b.jpg", image_file("RGB", (20, 30), "JPEG", seed=3), "image/jpeg")),
             ("files", ("c.png", image_file("L", (16, 16)), "image/png"))]
    answer = client.post(f"/v1/models/{MODEL}/classify", params={"k": 3}, files=files)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["file"] for p in predictions] == ["a.png", "b.jpg", "c.png"]
    classes = torch_runtime.info.classes
    for p in predictions:
        scores = [t["score"] for t in p["top"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(t["label"] == classes[t["index"]] for t in p["top"])


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b'{"inputs": []}', "exactly one tensor"),
    (b'{"inputs": [{"shape": [1, 3, 16, 16], "datatype": "FP64", "data": []}]}', "FP64"),
    (b'{"inputs": [{"shape": [1, 3, 8, 8], "datatype": "FP32", "data": []}]}', "shape"),
    (b'{"inputs": [{"shape": [1, 3, 16, 16], "datatype": "FP32", "data": [1, 2]}]}', "needs 768"),
    (b'{"inputs": [{"shape": [1, 3, 16, 16], "datatype": "FP32", "data": ["a"]}]}', "list of numbers"),
    (b'{"inputs": [{"shape": [1, 3, 16, 16], "datatype": "UINT8", "data": ' + str([300] * 768).encode() + b"}]}",
     "0..255"),
])
def test_malformed_infer_is_400_and_the_server_goes_on(serve, body, message):
    client = serve()
    answer = client.post(f"/v2/models/{MODEL}/infer", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and message in answer.json()["error"]
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert client.post(f"/v2/models/{MODEL}/infer", json=oip_body(x)).status_code == 200


def test_bad_images_and_unknown_model(serve):
    client = serve(max_pixels=32 * 32)
    url = f"/v1/models/{MODEL}/classify"
    answer = client.post(url, files=[("files", ("x.png", b"not an image at all", "image/png"))])
    assert answer.status_code == 400 and "not an image" in answer.json()["error"]
    answer = client.post(url, files=[("files", ("big.png", image_file(size=(64, 40)), "image/png"))])
    assert answer.status_code == 413 and "2560 pixels" in answer.json()["error"]
    assert client.post(url).status_code == 400  # no files
    assert client.post(url, params={"k": 0}, files=[("files", ("a.png", image_file(), "image/png"))]).status_code == 400
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        assert client.get(path).status_code == 404 and "'nope'" in client.get(path).json()["error"]
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert client.post("/v2/models/nope/infer", json=oip_body(x)).status_code == 404
    assert client.post(url, files=[("files", ("a.png", image_file(), "image/png"))]).status_code == 200


def test_token_guards_everything_but_health(serve, monkeypatch):
    monkeypatch.setenv("VIPR_SERVE_TOKEN", "s3cret")
    client = serve()
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    for path in (f"/v2/models/{MODEL}", "/metrics", "/v2"):
        answer = client.get(path)
        assert answer.status_code == 401 and "Bearer" in answer.json()["error"]
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert client.post(f"/v2/models/{MODEL}/infer", json=oip_body(x)).status_code == 401


def test_full_queue_is_503_with_retry_after(serve):
    runtime = GatedRuntime()
    client = serve(runtime, max_queue=1, max_batch_size=1, max_delay_ms=0)
    batcher = client.app.state.serve.batcher
    runtime.gate.clear()
    runtime.entered.clear()
    held = batcher.submit_nowait(np.zeros((1, 3, 4, 4), np.float32))
    assert runtime.entered.wait(5)  # the worker is inside predict, the queue is empty
    queued = batcher.submit_nowait(np.zeros((1, 3, 4, 4), np.float32))
    answer = client.post(f"/v2/models/{MODEL}/infer", json=oip_body(np.zeros((1, 3, 4, 4), np.float32)))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1" and "full" in answer.json()["error"]
    runtime.gate.set()
    held.result(5), queued.result(5)
    assert client.post(f"/v2/models/{MODEL}/infer", json=oip_body(np.zeros((1, 3, 4, 4), np.float32))).status_code == 200


def test_metrics_count_requests_and_batches(serve):
    client = serve()
    client.get(f"/v2/models/{MODEL}")
    client.get("/v2/models/nope")
    text = client.get("/metrics").text
    assert 'vipr_serve_requests_total{endpoint="/v2/models/{name}",status="200"} 1.0' in text
    assert 'vipr_serve_requests_total{endpoint="/v2/models/{name}",status="404"} 1.0' in text
    assert "vipr_serve_batch_size_count 1.0" in text  # the warm-up batch
    assert "vipr_serve_queue_depth 0.0" in text and "vipr_serve_request_seconds_bucket" in text
