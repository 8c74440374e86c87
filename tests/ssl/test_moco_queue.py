"""MoCo v2's queue: which keys a step enqueues (method.enqueue_both) and which queue both loss terms read."""

import pytest
import torch
import torch.nn.functional as F

from vipr.config import from_dict
from vipr.models import create_backbone
from vipr.ssl import MethodConfig, create_method
from vipr.ssl.losses import info_nce


def _moco(**overrides):
    config = from_dict(MethodConfig, {"name": "moco_v2", "queue_size": 16, "proj_dim": 8, **overrides})
    torch.manual_seed(0)
    return create_method(config, create_backbone("tiny"))


@pytest.mark.parametrize("enqueue_both", [True, False])
def test_symmetric_step_enqueues_the_keys_it_says(enqueue_both):
    model = _moco(enqueue_both=enqueue_both).eval()  # eval: BatchNorm uses running stats, so keys repeat
    views = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)]
    with torch.no_grad():
        key_of = [F.normalize(model.target(v).float(), dim=1) for v in views]
        model.forward_views(views, batch=None)
    expected = torch.cat([key_of[1], key_of[0]]) if enqueue_both else key_of[1]
    torch.testing.assert_close(model.queue[:len(expected)], expected)
    assert int(model.queue_ptr) == len(expected)


def test_both_loss_terms_read_the_queue_from_before_the_step():
    model = _moco().eval()
    views = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)]
    queue_before = model.queue.clone()
    with torch.no_grad():
        q = [F.normalize(model.online(v).float(), dim=1) for v in views]
        k = [F.normalize(model.target(v).float(), dim=1) for v in views]
        expected = (info_nce(q[0], k[1], queue_before, 0.2) + info_nce(q[1], k[0], queue_before, 0.2)) / 2
        loss = model.forward_views(views, batch=None)["loss"]
    torch.testing.assert_close(loss, expected)
