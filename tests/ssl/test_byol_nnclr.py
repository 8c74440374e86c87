"""BYOL and NNCLR modules: what trains, what follows by EMA, what the support set holds."""

import pytest
import torch
import torch.nn.functional as F

from vipr.config import from_dict
from vipr.models import create_backbone
from vipr.ssl import MethodConfig, create_method

pytestmark = pytest.mark.usefixtures("one_thread")


def build(name, **settings):
    config = from_dict(MethodConfig, {"name": name, "proj_hidden_dim": 16, "proj_dim": 8, **settings})
    torch.manual_seed(0)
    return create_method(config, create_backbone("tiny", small_stem=True, width=4))


def views(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)]


def test_byol_trains_online_and_predictor_and_moves_the_target_by_ema():
    model = build("byol", pred_hidden_dim=16)
    loss = model.forward_views(views(), None)["loss"]
    assert 0 <= float(loss.detach()) <= 8  # two terms of 2 - 2 cos, each in [0, 4]
    loss.backward()
    assert all(p.grad is not None for p in model.online.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target.parameters()]
    model.on_step_end(0.0)  # progress 0: the base momentum, 0.99
    assert model.momentum == pytest.approx(0.99)
    for t, b, o in zip(model.target.parameters(), before, model.online.parameters()):
        torch.testing.assert_close(t, 0.99 * b + 0.01 * o.detach())
    model.on_step_end(1.0)
    assert model.momentum == pytest.approx(1.0)


def test_byol_defaults_follow_the_paper_at_small_data_scale():
    model = create_method(from_dict(MethodConfig, {"name": "byol"}), create_backbone("tiny", width=4))
    c = model.config
    assert (c.proj_hidden_dim, c.proj_dim, c.pred_hidden_dim) == (4096, 256, 4096)
    assert (c.momentum, c.momentum_final) == (0.99, 1.0)
    assert model.default_recipe == "byol"


def test_nnclr_support_set_fills_with_view_one_projections_and_is_checkpointed():
    model = build("nnclr", queue_size=8, pred_hidden_dim=16)
    assert model.default_recipe == "simclr" and model.config.temperature == 0.2
    assert int(model.queue_filled) == 0
    first = views(seed=1)
    loss = model.forward_views(first, None)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.online.parameters())
    assert int(model.queue_filled) == 6 and int(model.queue_ptr) == 6
    with torch.no_grad():  # no step taken: the same weights and batch statistics give the same projections
        z1 = F.normalize(model.online(first[0]), dim=1)
    torch.testing.assert_close(model.queue[:6], z1)
    model.forward_views(views(seed=2), None)
    assert int(model.queue_filled) == 8 and int(model.queue_ptr) == 4  # wrapped: a ring buffer of 8
    state = model.state_dict()
    assert {"queue", "queue_ptr", "queue_filled"} <= set(state)
    fresh = build("nnclr", queue_size=8, pred_hidden_dim=16)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, model.queue) and int(fresh.queue_filled) == 8
