"""Losses against explicit loops over the papers' formulas."""

import math

import torch
import torch.nn.functional as F

from vipr.ssl.losses import byol_loss, info_nce, nnclr_loss, nt_xent


def test_info_nce_matches_loop():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(5, 8), dim=1)
    k = F.normalize(torch.randn(5, 8), dim=1)
    queue = F.normalize(torch.randn(11, 8), dim=1)
    t = 0.2
    total = 0.0
    for i in range(5):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(11))
        total += -math.log(pos / (pos + neg))
    assert math.isclose(float(info_nce(q, k, queue, t)), total / 5, rel_tol=1e-5)


def test_nt_xent_matches_loop():
    torch.manual_seed(1)
    z1, z2, t = torch.randn(4, 6), torch.randn(4, 6), 0.5
    z = torch.cat([z1, z2])
    n2 = len(z)

    def sim(a, b):
        return float(F.cosine_similarity(z[a], z[b], dim=0))

    total = 0.0
    for i in range(n2):
        j = (i + 4) % n2  # the other view of the same image
        denom = sum(math.exp(sim(i, m) / t) for m in range(n2) if m != i)
        total += -math.log(math.exp(sim(i, j) / t) / denom)
    assert math.isclose(float(nt_xent(z1, z2, t)), total / n2, rel_tol=1e-5)


def test_nt_xent_is_low_for_matching_views():
    z = torch.randn(8, 16)
    assert nt_xent(z, z, 0.1) < nt_xent(z, torch.randn(8, 16), 0.1)


def test_momentum_update_is_an_ema():
    from vipr.ssl.moco import MomentumEncoder

    online = torch.nn.Linear(3, 2)
    ema = MomentumEncoder(online)
    before = ema.encoder.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online, 0.9)
    torch.testing.assert_close(ema.encoder.weight, 0.9 * before + 0.1 * online.weight.detach())


def test_byol_loss_matches_loop():
    torch.manual_seed(2)
    p, z = torch.randn(5, 7), torch.randn(5, 7) * 3  # the target's scale must not matter
    total = 0.0
    for i in range(5):
        p_unit = [float(v) / math.sqrt(sum(float(u) ** 2 for u in p[i])) for v in p[i]]
        z_unit = [float(v) / math.sqrt(sum(float(u) ** 2 for u in z[i])) for v in z[i]]
        total += sum((a - b) ** 2 for a, b in zip(p_unit, z_unit))  # ||p/|p| - z/|z| ||^2, BYOL eq. 2
    assert math.isclose(float(byol_loss(p, z)), total / 5, rel_tol=1e-5)


def test_byol_loss_sends_no_gradient_to_the_target():
    p, z = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
    z = z.detach()
    assert float(byol_loss(z, 2 * z)) < 1e-6 and math.isclose(float(byol_loss(z, -z)), 4.0, rel_tol=1e-5)


def test_nnclr_loss_matches_loop():
    torch.manual_seed(3)
    neighbours, p, t = torch.randn(5, 6), torch.randn(5, 6), 0.2

    def cos(a, b):
        return float(F.cosine_similarity(a, b, dim=0))

    total = 0.0
    for i in range(5):
        denom = sum(math.exp(cos(neighbours[i], p[k]) / t) for k in range(5))  # over the batch's predictions
        total += -math.log(math.exp(cos(neighbours[i], p[i]) / t) / denom)
    assert math.isclose(float(nnclr_loss(neighbours, p, t)), total / 5, rel_tol=1e-5)
