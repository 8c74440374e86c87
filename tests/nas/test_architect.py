"""Bilevel alpha step: the second-order hypergradient against finite differences (DARTS eq. 7-8)."""

import pytest
import torch
import torch.nn.functional as F

from vipr.nas.architect import Architect
from vipr.nas.supernet import Supernet, SupernetSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only waits


def unrolled_val_loss(loss_fn, weights, arch, train, val, xi, wd, momentum, buffers):
    """L_val(w - xi (momentum m + grad_w L_train + wd w), alpha), weights restored afterwards."""
    w0 = [w.detach().clone() for w in weights]
    grads = torch.autograd.grad(loss_fn(train), weights)
    with torch.no_grad():
        for w, g, m in zip(weights, grads, buffers):
            w.sub_(xi * (momentum * m + g + wd * w))
        loss = loss_fn(val).item()
        for w, saved in zip(weights, w0):
            w.copy_(saved)
    return loss


def finite_difference(loss_fn, weights, arch, train, val, xi, wd, momentum, buffers, h=1e-5):
    grads = []
    for a in arch:
        g = torch.zeros_like(a)
        for i in range(a.numel()):
            values = []
            for sign in (1, -1):
                with torch.no_grad():
                    a.view(-1)[i] += sign * h
                values.append(unrolled_val_loss(loss_fn, weights, arch, train, val, xi, wd, momentum, buffers))
                with torch.no_grad():
                    a.view(-1)[i] -= sign * h
            g.view(-1)[i] = (values[0] - values[1]) / (2 * h)
        grads.append(g)
    return grads


def architect_for(weights, arch, wd=3e-4, momentum=0.9):
    opt = torch.optim.SGD(weights, lr=0.1, momentum=momentum, weight_decay=wd)
    for w in weights:  # a non-zero momentum buffer, as after some weight steps
        opt.state[w]["momentum_buffer"] = 0.1 * torch.randn_like(w)
    return Architect(arch, weights, opt, order=2), [opt.state[w]["momentum_buffer"] for w in weights]


def test_second_order_matches_finite_differences_on_a_quadratic():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    m_train, m_val = torch.randn(3, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    mix = torch.randn(4, 3, dtype=torch.float64)

    def loss_fn(batch):  # L_train and L_val both couple w and alpha
        if batch == "train":
            return ((m_train @ w - a) ** 2).sum() + (a * w[:3] ** 2).sum()
        return ((m_val @ w + mix @ a) ** 2).sum() + (a.sin() * w[2:]).sum()

    architect, buffers = architect_for([w], [a])
    got, _ = architect.second_order(loss_fn, "train", "val", xi=0.05)
    expected = finite_difference(loss_fn, [w], [a], "train", "val", 0.05, 3e-4, 0.9, buffers)
    assert torch.allclose(got[0], expected[0], rtol=1e-4, atol=1e-6)


def test_second_order_on_a_tiny_supernet_matches_autograd_through_the_unrolled_step(one_thread):
    """The same code on the real supernet (float64). eps = 1e-6 / ||v||: DARTS' 0.01 crosses too many
    ReLU / max-pool kinks in a 2-channel network for a tight check (measured error 0.2 vs 3e-11)."""
    torch.manual_seed(0)
    net = Supernet(SupernetSpec(channels=2, layers=3, num_classes=3, steps=2)).double()
    x, y = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (2, 4))
    loss_fn = lambda i: F.cross_entropy(net(x[i]), y[i])  # batch 0: train, 1: val
    weights, arch = net.weight_parameters(), net.arch_parameters()
    with torch.no_grad():
        for p in arch:
            p.copy_(torch.randn_like(p))
    architect, buffers = architect_for(weights, arch)
    architect.hvp_scale = 1e-6
    before = [w.detach().clone() for w in weights]
    got, _ = architect.second_order(loss_fn, 0, 1, xi=0.1)
    assert all(torch.equal(w, b) for w, b in zip(weights, before))  # weights restored in place

    grads = torch.autograd.grad(loss_fn(0), weights, create_graph=True)  # exact: differentiate w'(alpha)
    unrolled = [w - 0.1 * (0.9 * m + g + 3e-4 * w) for w, g, m in zip(weights, grads, buffers)]
    names = [n for n, p in net.named_parameters() if n not in ("alphas_normal", "alphas_reduce")]
    state = {**dict(zip(names, unrolled)), "alphas_normal": arch[0], "alphas_reduce": arch[1],
             **dict(net.named_buffers())}
    val_loss = F.cross_entropy(torch.func.functional_call(net, state, (x[1],)), y[1])
    for g, e in zip(got, torch.autograd.grad(val_loss, arch)):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-8), (g - e).abs().max()


def test_step_updates_only_alpha_with_adam():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    a = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    architect = Architect([a], [w], opt, lr=3e-4, order=1)
    w0 = w.detach().clone()
    architect.step(lambda batch: ((w * a - 1) ** 2).sum(), None, "val", xi=0.1)
    assert torch.equal(w, w0) and w.grad is None
    assert torch.allclose(a.detach().abs(), torch.full((4,), 3e-4), rtol=1e-3)  # Adam's first step: lr * sign
