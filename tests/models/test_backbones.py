"""The backbone contract (DESIGN.md) over the whole registry and a few timm models."""

import importlib.util

import pytest
import torch

from vipr.errors import ConfigError
from vipr.models import TIMM_PATTERN, create_backbone, list_backbones

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs the timm extra")
# A ResNet, a MobileNet, a ViT (dynamic image size: 2x2 patches at 32 px) and a ConvNeXt;
# small_stem is ignored by timm models, so each runs once.
TIMM_SAMPLES = ["timm:resnet18", "timm:mobilenetv3_small_100", "timm:vit_tiny_patch16_224", "timm:convnext_atto"]
CASES = ([(name, small_stem) for name in list_backbones() if name != TIMM_PATTERN for small_stem in (True, False)]
         + [pytest.param(name, True, marks=needs_timm) for name in TIMM_SAMPLES])


@pytest.mark.parametrize(("name", "small_stem"), CASES)
def test_backbone_contract(name, small_stem):
    torch.manual_seed(0)
    model = create_backbone(name, small_stem=small_stem).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.feature_dim)
        inter = model.forward_intermediates(x, [1, 2, -1])
        assert [t.shape[1] for t in inter] == [model.stage_dims[1], model.stage_dims[2], model.stage_dims[-1]]
        assert inter[-1].shape[0] == 2 and inter[-1].ndim == 4
        pooled_last = inter[-1].mean(dim=(2, 3))
        torch.testing.assert_close(pooled_last, features, rtol=1e-4, atol=1e-5)
        assert torch.equal(model(x), features)  # no head: forward gives features
        model.reset_head(7)
        assert model(x).shape == (2, 7)
        model.reset_head(0)
        assert model(x).shape == (2, model.feature_dim)
    model = model.to(memory_format=torch.channels_last)  # as the trainer runs it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.forward_features(x.contiguous(memory_format=torch.channels_last))
    assert torch.nn.functional.cosine_similarity(low.float(), features).min() > 0.99  # bf16 keeps ~3 digits
    model.train().forward_features(x).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # DDP needs no unused parameters


def test_small_stem_keeps_resolution():
    small = create_backbone("resnet18", small_stem=True)
    large = create_backbone("resnet18", small_stem=False)
    x = torch.randn(1, 3, 32, 32)
    assert small.forward_intermediates(x, [0])[0].shape[-1] == 32
    assert large.forward_intermediates(x, [0])[0].shape[-1] == 8


def test_unknown_backbone_suggests():
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_backbone("resnet81")
