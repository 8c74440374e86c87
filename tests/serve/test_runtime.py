"""Runtimes: PyTorch and onnxruntime agree, preprocessing is the evaluation transform, clear errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from vipr.data.augment import eval_transform
from vipr.errors import ConfigError, ExportError
from vipr.serve.runtime import create_runtime, list_runtimes, load_runtime, onnx_cache_path, register_runtime

TORCH_RUNTIME = "torch"  # the reference every registered runtime is compared with


@pytest.mark.parametrize("kind", list_runtimes())
def test_every_registered_runtime_follows_the_contract(kind, classifier_path, torch_runtime, tmp_path):
    runtime = create_runtime(kind, classifier_path, cache_dir=tmp_path / "cache")
    assert (runtime.info.image_size, runtime.info.classes) == (torch_runtime.info.image_size, torch_runtime.info.classes)
    assert runtime.device is not None and type(runtime).summary
    pixels = list(np.random.default_rng(3).integers(0, 256, (2, 3, 20, 20), dtype=np.uint8))
    batch = runtime.preprocess(pixels)  # uint8 (3, H, W) -> float32 (B, 3, S, S)
    assert batch.shape == (2, 3, runtime.info.image_size, runtime.info.image_size) and batch.dtype == np.float32
    logits = runtime.predict(batch)
    assert logits.shape == (2, runtime.info.output_dim) and logits.dtype == np.float32
    tolerance = 5e-2 if torch_runtime.precision == "bf16" else 1e-3
    np.testing.assert_allclose(logits, torch_runtime.predict(batch), atol=tolerance)


def test_a_registered_runtime_is_listed_and_created(monkeypatch, classifier_path, torch_runtime):
    from vipr.serve import runtime as module

    monkeypatch.setattr(module, "_RUNTIMES", dict(module._RUNTIMES))  # the registration stays in this test

    @register_runtime("echo", "the torch runtime under another name")
    class Echo:
        @classmethod
        def open(cls, path, *, cache_dir=None, device="cpu"):
            return torch_runtime

    assert "echo" in list_runtimes() and list_runtimes()[0] == "onnx"  # the default first
    assert create_runtime("echo", classifier_path) is torch_runtime


def test_torch_and_onnx_runtimes_agree(torch_runtime, onnx_runtime):
    assert replace(onnx_runtime.info, platform=torch_runtime.info.platform) == torch_runtime.info
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    tolerance = 5e-2 if torch_runtime.precision == "bf16" else 1e-3
    np.testing.assert_allclose(torch_runtime.predict(x), onnx_runtime.predict(x), atol=tolerance)


def test_preprocess_resizes_each_image_with_the_eval_transform(torch_runtime):
    info = torch_runtime.info
    small = np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    large = np.random.default_rng(2).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    batch = torch_runtime.preprocess([small, large])
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    expected = eval_transform(torch.from_numpy(large)[None], 16, info.mean, info.std).numpy()
    np.testing.assert_allclose(batch[1:], expected, atol=1e-6)


def test_onnx_export_is_cached_per_checkpoint(classifier_path, onnx_runtime):
    assert onnx_runtime.path == onnx_cache_path(classifier_path, onnx_runtime.path.parent)
    again = load_runtime(onnx_runtime.path, "onnx")  # an exported file serves as it is
    assert again.info == onnx_runtime.info


def test_load_runtime_errors(onnx_runtime, classifier_path):
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'.*onnx"):
        load_runtime(classifier_path, "tensorrt")
    with pytest.raises(ExportError, match="--runtime onnx"):
        load_runtime(onnx_runtime.path, "torch")
