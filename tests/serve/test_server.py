"""A real uvicorn server on a free loopback port: concurrent requests get batched, Triton's client talks to it."""

import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn

from vipr.cli.main import build_parser
from vipr.serve.app import create_app

from .conftest import MODEL

SIZE = 16


@pytest.fixture(scope="module")
def server(torch_runtime):
    """(base URL, app) of a server batching up to 16 rows, waiting up to 50 ms for a batch to fill."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(torch_runtime, MODEL, model_version=1, max_batch_size=16, max_delay_ms=50)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 20 s"
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


def test_concurrent_requests_are_batched(server, torch_runtime):
    url, app = server
    x = np.random.default_rng(0).standard_normal((16, 1, 3, SIZE, SIZE)).astype(np.float32)
    barrier, answers = threading.Barrier(16), [None] * 16

    def post(i):
        with httpx.Client(base_url=url, timeout=30) as client:
            barrier.wait()
            body = {"inputs": [{"name": "input", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32",
                                "data": x[i].reshape(-1).tolist()}]}
            answers[i] = client.post(f"/v2/models/{MODEL}/infer", json=body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(a is not None and a.status_code == 200 for a in answers)
    for i, answer in enumerate(answers):  # each request got its own row back
        logits = np.reshape(answer.json()["outputs"][0]["data"], (1, 10))
        np.testing.assert_allclose(logits, torch_runtime.predict(x[i]), atol=2e-2)
    sizes = list(app.state.serve.batcher.batch_sizes)
    assert max(sizes) > 1 and sum(sizes) == 1 + 16, sizes  # 1: the warm-up batch
    metrics = httpx.get(f"{url}/metrics").text
    assert f"vipr_serve_batch_size_count {len(sizes)}.0" in metrics


def test_triton_client_talks_to_the_server(server, torch_runtime):
    http = pytest.importorskip("tritonclient.http")
    url, _ = server
    client = http.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["outputs"][0]["name"] == "logits"
    x = np.random.default_rng(5).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    tensor = http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    result = client.infer(MODEL, [tensor], outputs=[http.InferRequestedOutput("logits", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("logits"), torch_runtime.predict(x), atol=2e-2)
    client.close()


def test_serve_command_parses():
    from vipr.cli.options import ServeOptions, read_options

    args = build_parser().parse_args(["serve", "linear-tiny@champion", "--runtime", "torch", "--port", "8123",
                                      "--max-delay-ms", "2.5", "--token", "t"])
    options = read_options(ServeOptions, args)  # the defaults live in the typed options, with their ranges
    assert (args.ref, args.runtime, options.port, options.max_delay_ms, options.max_batch_size, options.max_queue) == \
        ("linear-tiny@champion", "torch", 8123, 2.5, 16, 256)
