"""MoCo v2's queue: which keys a step enqueues (method.enqueue) and which queue each loss term reads."""

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


@pytest.mark.parametrize("enqueue", ["one", "both", "sequential"])
def test_symmetric_step_enqueues_the_keys_it_says(enqueue):
    model = _moco(enqueue=enqueue).eval()  # eval: BatchNorm uses running stats, so keys repeat
    views = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)]
    with torch.no_grad():
        key_of = [F.normalize(model.target(v).float(), dim=1) for v in views]
        model.forward_views(views, batch=None)
    expected = key_of[1] if enqueue == "one" else torch.cat([key_of[1], key_of[0]])
    torch.testing.assert_close(model.queue[:len(expected)], expected)
    assert int(model.queue_ptr) == len(expected)


@pytest.mark.parametrize("enqueue", ["one", "both", "sequential"])
def test_which_queue_each_loss_term_reads(enqueue):
    model = _moco(enqueue=enqueue).eval()
    views = [torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)]
    queue_before = model.queue.clone()
    with torch.no_grad():
        q = [F.normalize(model.online(v).float(), dim=1) for v in views]
        k = [F.normalize(model.target(v).float(), dim=1) for v in views]
        # sequential: the first term's keys (view 1's) replace the oldest rows before the second term
        second = torch.cat([k[1], queue_before[len(k[1]):]]) if enqueue == "sequential" else queue_before
        expected = (info_nce(q[0], k[1], queue_before, 0.2) + info_nce(q[1], k[0], second, 0.2)) / 2
        loss = model.forward_views(views, batch=None)["loss"]
    torch.testing.assert_close(loss, expected)
