"""LARS against its formula, and the warm-up + cosine schedule."""

import math

import pytest
import torch

from vipr.engine.optim import LARS, ClippedSGD, create_optimizer, warmup_cosine, warmup_schedule
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


def test_step_schedule_warms_up_then_drops_tenfold_at_two_thirds_and_eight_ninths():
    assert warmup_schedule("step", 0, 100, 10) == pytest.approx(0.1)  # the same linear warm-up
    assert warmup_schedule("step", 10, 100, 10) == 1.0
    assert warmup_schedule("step", 69, 100, 10) == 1.0  # 59/90 of the way: before 2/3
    assert warmup_schedule("step", 70, 100, 10) == pytest.approx(0.1)  # 60/90 = 2/3
    assert warmup_schedule("step", 90, 100, 10) == pytest.approx(0.01)  # 80/90 = 8/9
    assert warmup_schedule("cosine", 55, 100, 10) == warmup_cosine(55, 100, 10)
    with pytest.raises(ConfigError, match="cosine, step"):
        warmup_schedule("linear", 50, 100, 10)


def test_clipped_sgd_clips_the_global_norm_before_the_step():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = ClippedSGD([w], lr=1.0, momentum=0.0, weight_decay=0.0, max_norm=1.0)
    w.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5 -> 1
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))
