"""Distillation losses against explicit loops over the papers' formulas, on small random tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from vipr.distill.losses import hint_loss, kd_loss, seed_loss
from vipr.ssl.losses import info_nce


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("teacher_temperature", [0.5, 0.05])
def test_seed_loss_matches_loop(teacher_temperature):
    torch.manual_seed(0)
    s, t, queue = (F.normalize(torch.randn(n, 8, dtype=torch.float64), dim=1) for n in (5, 5, 7))
    total = 0.0
    for i in range(5):
        candidates = [t[i]] + [queue[j] for j in range(7)]  # [t_i; Q]
        p_t = _softmax([float(t[i] @ c) / teacher_temperature for c in candidates])
        p_s = _softmax([float(s[i] @ c) / 0.2 for c in candidates])
        total += -sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s))
    assert math.isclose(float(seed_loss(s, t, queue, 0.2, teacher_temperature)), total / 5, rel_tol=1e-9)


def test_seed_loss_at_the_authors_teacher_temperature_is_info_nce_with_the_teacher_as_positive():
    torch.manual_seed(1)
    s, t = F.normalize(torch.randn(6, 16), dim=1), F.normalize(torch.randn(6, 16), dim=1)
    queue = F.normalize(torch.randn(32, 16), dim=1)  # random keys: t.q is far below t.t = 1
    torch.testing.assert_close(seed_loss(s, t, queue, 0.2, 1e-4), info_nce(s, t, queue, 0.2))


def test_seed_loss_gradient_reaches_only_the_student():
    s = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    t = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    seed_loss(s, t, F.normalize(torch.randn(5, 4), dim=1), 0.2, 0.1).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("labels", [[2, -1, 0, 1], [-1, -1, -1, -1], [0, 1, 2, 0]])
@pytest.mark.parametrize("alpha", [0.9, 1.0, 0.0])
def test_kd_loss_matches_loop(labels, alpha):
    torch.manual_seed(2)
    zs, zt, T = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), 4.0
    y = torch.tensor(labels)
    kl = 0.0
    for i in range(4):
        p_t, p_s = _softmax([float(v) / T for v in zt[i]]), _softmax([float(v) / T for v in zs[i]])
        kl += sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    expected = alpha * T * T * kl / 4  # every image, mean over N
    known = [i for i in range(4) if labels[i] >= 0]
    if known and alpha < 1:
        ce = sum(-math.log(_softmax([float(v) for v in zs[i]])[labels[i]]) for i in known) / len(known)
        expected += (1 - alpha) * ce  # labelled images only
    assert math.isclose(float(kd_loss(zs, zt, y, T, alpha)), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_hint_loss_matches_loop():
    torch.manual_seed(3)
    r, t = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    total = 0.0
    for n in range(2):
        rv, tv = r[n].flatten().tolist(), t[n].flatten().tolist()
        rn, tn = math.sqrt(sum(v * v for v in rv)), math.sqrt(sum(v * v for v in tv))
        total += sum((a / rn - b / tn) ** 2 for a, b in zip(rv, tv))
    assert math.isclose(float(hint_loss(r, t)), total / 2, rel_tol=1e-9)
    assert float(hint_loss(t, 3 * t)) < 1e-12  # scale-free
