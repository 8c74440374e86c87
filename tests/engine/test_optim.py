"""LARS against its formula, and the warm-up + cosine schedule."""

import math

import pytest
import torch

from vipr.engine.optim import LARS, create_optimizer, warmup_cosine
from vipr.errors import ConfigError


def test_lars_step_matches_formula():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    grad_w, grad_b = torch.randn(4, 3), torch.randn(3)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = LARS([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=0.5, momentum=0.9, trust=0.01)
    w.grad, b.grad = grad_w.clone(), grad_b.clone()
    opt.step()
    update = grad_w + 0.1 * w0
    ratio = 0.01 * w0.norm() / update.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.5 * ratio * update)
    torch.testing.assert_close(b.detach(), b0 - 0.5 * grad_b)  # 1-D: no adaptation, no decay


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="sgd, lars"):
        create_optimizer("adamw", torch.nn.Linear(2, 2), 0.1, 0.9, 0.0)
