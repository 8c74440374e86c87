"""Runtimes: PyTorch and onnxruntime agree, preprocessing is the evaluation transform, clear errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from vipr.data.augment import eval_transform
from vipr.errors import ConfigError, ExportError
from vipr.serve.runtime import load_runtime, onnx_cache_path


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
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        load_runtime(classifier_path, "tensorrt")
    with pytest.raises(ExportError, match="--runtime onnx"):
        load_runtime(onnx_runtime.path, "torch")
