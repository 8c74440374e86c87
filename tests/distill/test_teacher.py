"""The frozen teacher: out of the student's state and optimizer, in eval mode, moved with the method."""

import torch

from vipr.config import from_dict
from vipr.data.batch import Batch
from vipr.distill.settings import queue_rows
from vipr.engine.optim import create_optimizer
from vipr.models import create_backbone
from vipr.ssl import MethodConfig, create_method


def _method(name, teacher, **settings):
    config = from_dict(MethodConfig, {"name": name, "teacher": str(teacher), **settings})
    return create_method(config, create_backbone("tiny"))


def test_the_teacher_is_no_part_of_the_students_state(teacher):
    method = _method("seed", teacher)
    held = method.teacher.module
    assert not held.training and not any(p.requires_grad for p in held.parameters())
    assert not any(key.startswith("teacher") for key in method.state_dict())
    teacher_params = {id(p) for p in held.parameters()}
    optimizer = create_optimizer("sgd", method, 0.1, 0.9, 1e-4)
    assert not teacher_params & {id(p) for group in optimizer.param_groups for p in group["params"]}
    method.train()
    assert not held.training  # the engine's train() does not reach it
    assert method.queue.shape == (4096, method.teacher.feature_dim)  # unbound: the configured size


def test_the_teacher_moves_with_the_method(teacher):
    method = _method("feature", teacher).to(torch.float64).to(memory_format=torch.channels_last)
    weight = next(p for p in method.teacher.module.parameters() if p.ndim == 4)
    assert weight.dtype == torch.float64 and weight.is_contiguous(memory_format=torch.channels_last)


def test_a_step_under_bf16_autocast_gives_float32_teacher_outputs(teacher):
    method = _method("seed", teacher)
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert method.teacher.features(x).dtype == torch.float32
        loss = method.forward_views([x], Batch(torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                                               torch.full((4,), -1), torch.arange(4)))["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert int(method.queue_ptr) == 4  # the teacher embeddings went into the queue


def test_the_queue_is_capped_at_a_quarter_of_the_split():
    assert queue_rows(4096, 64) == 16 and queue_rows(4096, 50_000) == 4096 and queue_rows(4096, 2) == 1
