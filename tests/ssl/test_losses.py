"""Losses against explicit loops over the papers' formulas."""

import math

import torch
import torch.nn.functional as F

from vipr.ssl.losses import info_nce, nt_xent


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
