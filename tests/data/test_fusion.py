"""Fused augmentation kernels: compiled only inside the scope, the same views as the eager ops, eager on failure."""

from __future__ import annotations

import pytest
import torch

from vipr.data import fusion
from vipr.data.augment import ViewSpec, augment_crops, get_recipe
from vipr.data.augment_color import adjust_hue
from vipr.data.views import ViewMaker
from vipr.pretrain import build_config

VIEW = ViewSpec(24, jitter_p=0.8, gray_p=0.3, blur_p=0.5, solarize_p=0.3)  # every op on some samples


@pytest.fixture
def fresh_kernels(monkeypatch):
    """Every @fusable op compiles again in this test (and is restored after it)."""
    for op in _fusable_ops():
        monkeypatch.setattr(op, "compiled", None)
        monkeypatch.setattr(op, "broken", False)


def _fusable_ops():
    from vipr.data import augment_color, augment_ops
    return [v for m in (augment_color, augment_ops) for v in vars(m).values() if isinstance(v, fusion.fusable)]


def test_ops_compile_only_inside_the_scope(monkeypatch, fresh_kernels) -> None:
    compiled = []

    def fake_compile(fn, **kwargs):  # a stand-in compiler: records the op, returns it unchanged
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    x, shift = torch.rand(2, 3, 8, 8), torch.tensor([0.1, -0.2])
    adjust_hue(x, shift)
    assert compiled == []  # outside the scope: eager, nothing compiled
    with fusion.fused_kernels(True):
        adjust_hue(x, shift)
        adjust_hue(x, shift)
        with fusion.fused_kernels(False):
            adjust_hue(x, shift)
    assert compiled == ["adjust_hue"]  # once, on the first call inside the scope
    assert not fusion._enabled[0]  # the scope is restored on exit


def test_a_failing_compiler_warns_once_and_runs_eagerly(monkeypatch, fresh_kernels) -> None:
    def broken_compile(fn, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    x, shift = torch.rand(2, 3, 8, 8), torch.tensor([0.1, -0.2])
    with fusion.fused_kernels(True):
        with pytest.warns(UserWarning, match="compiling adjust_hue failed .*no C.. compiler found.*fused_augment=false"):
            got = adjust_hue(x, shift)
        second = adjust_hue(x, shift)  # no second attempt, no second warning
    torch.testing.assert_close(got, adjust_hue(x, shift), rtol=0, atol=0)
    torch.testing.assert_close(second, got, rtol=0, atol=0)


def test_zero_hue_shift_leaves_samples_bit_identical() -> None:
    x = torch.rand(3, 3, 16, 16)
    out = adjust_hue(x, torch.tensor([0.0, 0.25, 0.0]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.equal(out[1], x[1])


def test_fused_augment_defaults_on_from_128_px_and_follows_the_override() -> None:
    assert build_config({"data": {"image_size": 224}}).train.fused_augment is True
    assert build_config({"data": {"image_size": 128}}).train.fused_augment is True
    assert build_config({"data": {"image_size": 96}}).train.fused_augment is False
    assert build_config({"data": {"image_size": 224}, "train": {"fused_augment": False}}).train.fused_augment is False


@pytest.mark.slow  # inductor compiles each op: about a minute on 2 cores
def test_compiled_views_equal_the_eager_views(fresh_kernels) -> None:
    crops = torch.randint(0, 256, (13, 3, 24, 24), dtype=torch.uint8)
    eager = augment_crops([crops], [VIEW], generator=torch.Generator().manual_seed(3))[0]
    with fusion.fused_kernels(True):
        fused = augment_crops([crops], [VIEW], generator=torch.Generator().manual_seed(3))[0]
    assert not any(op.broken for op in _fusable_ops())  # compiled indeed, not the eager fallback
    torch.testing.assert_close(fused, eager, rtol=0, atol=2e-5)
    specs = get_recipe("moco_v2", 24)  # and through the view maker the trainer builds
    views = [ViewMaker(tuple(specs), torch.Generator().manual_seed(0), fused_augment=f).from_crops([crops, crops])
             for f in (False, True)]
    for a, b in zip(*views):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
