from dataclasses import dataclass

import pytest

from vipr.config import apply_overrides, from_dict, to_dict
from vipr.errors import ConfigError
from vipr.pretrain import PretrainConfig, build_config


def test_defaults_round_trip():
    config = build_config({})
    assert from_dict(PretrainConfig, to_dict(config)) == config
    assert config.model.small_stem is True  # 32 px images get the small stem


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        build_config({"optim": {"lrr": 0.1}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(apply_overrides({}, ["optim.lr=fast"]))


def test_method_settings_are_typed_per_method():
    config = build_config(apply_overrides({}, ["method.name=moco_v2", "method.queue_size=1024"]))
    assert config.method.queue_size == 1024
    with pytest.raises(ConfigError, match="queue_size"):
        build_config(apply_overrides({}, ["method.name=simclr", "method.queue_size=1024"]))
    with pytest.raises(ConfigError, match="did you mean 'simclr'"):
        build_config({"method": {"name": "simclrr"}})


def test_override_parsing():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "a.c=true", "d=[1, 2]"])
    assert data == {"a": {"b": 2.5, "c": True}, "d": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["nonsense"])


def test_int_to_float_and_optional():
    @dataclass(frozen=True)
    class C:
        x: float = 1.0
        y: int | None = None

    assert from_dict(C, {"x": 2, "y": None}) == C(2.0, None)
    with pytest.raises(ConfigError):
        from_dict(C, {"y": "three"})


def test_default_method_section_has_its_type():
    from vipr.ssl.moco import MoCoConfig

    assert type(build_config({}).method) is MoCoConfig
