"""Defaults by image size (vipr.profiles): the small-image recipe, user values winning, the round trip."""

import dataclasses

import pytest

from vipr.config import to_dict
from vipr.pretrain import OptimConfig, build_config
from vipr.ssl.moco import MoCoConfig


def _small_fields(cls) -> dict:
    return dict(cls.SMALL_IMAGES)


def test_small_images_take_the_small_recipe_and_large_ones_the_papers():
    small, large = build_config({}), build_config({"data": {"image_size": 224}})
    assert small.data.profile == "small" and large.data.profile == "large"
    for key, value in _small_fields(OptimConfig).items():
        assert getattr(small.optim, key) == value
        assert getattr(large.optim, key) == getattr(OptimConfig(), key)
    for key, value in _small_fields(MoCoConfig).items():
        assert getattr(small.method, key) == value
        assert getattr(large.method, key) == getattr(MoCoConfig(), key)


def test_the_small_recipe_differs_from_the_papers_defaults():
    assert any(getattr(OptimConfig(), k) != v for k, v in _small_fields(OptimConfig).items())
    assert any(getattr(MoCoConfig(), k) != v for k, v in _small_fields(MoCoConfig).items())


def test_a_value_the_user_gives_always_wins():
    key, value = next(iter(_small_fields(MoCoConfig).items()))
    other = not value if isinstance(value, bool) else value * 2
    config = build_config({"method": {"name": "moco_v2", key: other}})
    assert getattr(config.method, key) == other


def test_an_explicit_profile_overrides_the_image_size():
    assert build_config({"data": {"profile": "large"}}).optim == OptimConfig()
    assert build_config({"data": {"profile": "small", "image_size": 224}}).data.profile == "small"


@pytest.mark.parametrize("size", [32, 224])
def test_the_resolved_config_reads_back_unchanged(size):
    config = build_config({"data": {"image_size": size}})
    assert build_config(to_dict(config)) == config


def test_methods_without_a_small_recipe_keep_their_defaults():
    config = build_config({"method": {"name": "simclr"}})
    assert dataclasses.asdict(config.method) == dataclasses.asdict(type(config.method)())


def test_byol_takes_the_small_head_at_small_sizes_only():
    small = build_config({"method": {"name": "byol"}})
    large = build_config({"method": {"name": "byol"}, "data": {"image_size": 224}})
    assert (small.method.proj_hidden_dim, small.method.pred_hidden_dim) == (1024, 1024)
    assert (large.method.proj_hidden_dim, large.method.pred_hidden_dim) == (4096, 4096)  # the paper's
