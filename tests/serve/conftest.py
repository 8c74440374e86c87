"""Serving fixtures: runtimes on the tiny linear classifier of tests/conftest.py, a blocking fake runtime, and
short `vipr transfer` runs (64 px scenes, tiny backbone) for the detection and segmentation endpoints."""

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vipr.serve.app import create_app
from vipr.serve.runtime import ModelInfo, OnnxRuntime, TorchRuntime, preprocess

MODEL = "linear-tiny"
SCENES = "builtin:scenes?size=64&train=16&test=8&classes=3&objects=3"
TRANSFER = ["--data", SCENES, "--backbone", "tiny", "--batch-size", "4", "--no-track", "--no-progress",
            "--set", "train.num_threads=1", "eval.batch_size=8"]
# run name -> (task, extra flags). RetinaNet keeps every score: 4 steps leave it below the default 0.05,
# and its export check needs detections to compare
DENSE_RUNS = {"detect": ("detect", ["--epochs", "1"]), "instance": ("instance", ["--epochs", "1"]),
              "segment": ("segment", ["--epochs", "1"]),
              "retinanet": ("detect", ["--model", "retinanet", "--iters", "1", "--set", "eval.score_thresh=0"])}


@pytest.fixture(scope="session")
def classifier_path(linear_run):
    return linear_run / "classifier.pt"


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory):
    """A linear probe on random-init `tiny` features of builtin:digits at 32 px (89% top-1; about 10 s on one
    thread): a classifier whose int8 model can be told apart from a broken one, unlike the chance-level
    linear-tiny."""
    import torch

    from vipr.eval.runner import run_eval

    out, threads = tmp_path_factory.mktemp("digits") / "linear", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_eval("linear", checkpoint="random", backbone="tiny", image_size=32, data="builtin:digits", out=out,
                 epochs=20, batch_size=256, precision="fp32", progress=False)
    finally:
        torch.set_num_threads(threads)
    return out / "classifier.pt"


@pytest.fixture(scope="session")
def torch_runtime(classifier_path):
    return TorchRuntime.from_checkpoint(classifier_path)


@pytest.fixture(scope="session")
def onnx_runtime(classifier_path, tmp_path_factory):
    return OnnxRuntime.from_checkpoint(classifier_path, tmp_path_factory.mktemp("onnx-cache"), threads=1)


@pytest.fixture(scope="session")
def dense_runs(tmp_path_factory):
    """Run folders of DENSE_RUNS, trained on first use (about 3 s each on one thread)."""
    import torch

    from vipr.cli.main import main

    threads, runs = torch.get_num_threads(), {}
    torch.set_num_threads(1)
    try:
        for name, (task, flags) in DENSE_RUNS.items():
            runs[name] = tmp_path_factory.mktemp("dense") / name
            assert main(["transfer", task, "--out", str(runs[name]), *TRANSFER, *flags]) == 0
    finally:
        torch.set_num_threads(threads)
    return runs


@pytest.fixture
def serve(torch_runtime):
    """``serve(**create_app_kwargs) -> TestClient`` with the app started (warmed up); all closed at the end."""
    clients = []

    def start(runtime=torch_runtime, **kwargs):
        client = TestClient(create_app(runtime, MODEL, model_version=1, **kwargs))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


class GatedRuntime:
    """A fake model whose ``predict`` waits until ``gate`` is open: fills the queue on demand."""

    info = ModelInfo(image_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), classes=("a", "b"), output_dim=2)

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def preprocess(self, images):
        return preprocess(images, self.info)

    def predict(self, batch):
        self.entered.set()
        self.gate.wait(10)
        return np.zeros((len(batch), 2), np.float32)
