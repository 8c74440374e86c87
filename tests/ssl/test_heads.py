"""The projection head's settings: width, depth and BatchNorm (method.proj_*)."""

import torch
from torch import nn

from vipr.config import from_dict
from vipr.models import create_backbone
from vipr.ssl import MethodConfig, create_method
from vipr.ssl.registry import projection_head


def _layers(head: nn.Module) -> list[str]:
    return [type(m).__name__ for m in head]


def test_head_with_batch_norm_is_linear_bn_relu_linear_without_hidden_bias():
    head = projection_head(8, 16, 4, layers=3)
    assert _layers(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head[0].bias is None and head[0].out_features == 16 and head[-1].out_features == 4


def test_head_without_batch_norm_is_moco_v2s_linear_relu_linear_with_bias():
    head = projection_head(8, 16, 4, batch_norm=False)
    assert _layers(head) == ["Linear", "ReLU", "Linear"]
    assert head[0].bias is not None
    x = torch.randn(5, 8)
    expected = head[2](torch.relu(x @ head[0].weight.T + head[0].bias))
    torch.testing.assert_close(head(x), expected)


def test_method_config_builds_the_head_it_names():
    config = from_dict(MethodConfig, {"name": "moco_v2", "proj_hidden_dim": 32, "proj_batch_norm": False})
    model = create_method(config, create_backbone("tiny"))
    head = model.online.head
    assert _layers(head) == ["Linear", "ReLU", "Linear"] and head[0].out_features == 32
