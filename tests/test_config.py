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


# ---- declared ranges (issue 12: nothing silently wrong) ------------------------------------------

def _config_classes() -> list[type]:
    """Every typed config dataclass: the run configs' trees, every registered variant, the CLI's options."""
    import dataclasses
    import typing

    from vipr import config as cfg
    from vipr.cli import options
    from vipr.nas.config import SearchConfig
    from vipr.nas.strategy import load_builtin
    from vipr.nas.train import NasTrainConfig

    load_builtin()
    roots = [PretrainConfig, SearchConfig, NasTrainConfig]
    roots += [c for c in vars(options).values()
              if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == options.__name__]
    roots += [v for variants in cfg._VARIANTS.values() for v in variants.values()]
    seen, todo = [], list(roots)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for hint in cfg.field_hints(cls).values():
            base = cfg.constraints(hint)[0]
            if dataclasses.is_dataclass(base):
                todo.append(base)
            todo += [a for a in typing.get_args(base) if dataclasses.is_dataclass(a)]
    return seen


def _is_numeric(hint) -> bool:
    import typing

    if hint in (int, float):
        return True
    return any(_is_numeric(a) for a in typing.get_args(hint) if a is not Ellipsis)


def test_every_numeric_field_declares_its_range():
    import dataclasses

    from vipr.config import constraints, field_hints

    classes = _config_classes()
    assert len(classes) > 25  # the run sections, 9 methods, 4 strategies, the CLI's options
    undeclared = [f"{cls.__name__}.{name}" for cls in classes for name, hint in field_hints(cls).items()
                  if name in {f.name for f in dataclasses.fields(cls)}
                  and _is_numeric(constraints(hint)[0]) and not constraints(hint)[1]]
    assert not undeclared, f"numeric config fields without a Range or Choices: {undeclared}"


def test_every_default_is_inside_its_declared_range():
    import dataclasses

    from vipr.config import _check_declared, field_hints

    for cls in _config_classes():
        hints = field_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                _check_declared(hints[f.name], f.default, f"{cls.__name__}.{f.name}")  # raises when outside


@pytest.mark.parametrize("override, expected", [
    ("train.batch_size=0", "'train.batch_size' must be an integer in [1, 1048576], got 0"),
    ("optim.lr=-1", "'optim.lr' must be a number in (0, 100], got -1.0"),
    ("method.queue_size=-1", "'method.queue_size' must be an integer in [1, 16777216], got -1"),
    ("data.image_size=0", "'data.image_size' must be an integer in [8, 4096], got 0"),
    ("optim.lr=.nan", "'optim.lr' must be a number in (0, 100], got nan"),
    ("optim.momentum=1.5", "'optim.momentum' must be a number in [0, 1], got 1.5"),
    ("train.precision=bf32", "'train.precision' must be one of auto, bf16, fp16, fp32, got 'bf32'"),
    ("optim.optimizer=adam", "'optim.optimizer' must be one of sgd, lars, got 'adam'"),
    ("method.name=hsa", None),  # a valid variant switch, then a bad item of one of its tuples:
])
def test_a_value_outside_its_range_names_key_value_and_range(override, expected):
    data = apply_overrides({}, [override])
    if expected is None:
        data = apply_overrides(data, ["method.stage_weights=[0.5, -1]"])
        expected = "'method.stage_weights' must be a number in [0, 100] (each item), got (0.5, -1.0)"
    with pytest.raises(ConfigError) as err:
        build_config(data)
    assert str(err.value) == expected


def test_range_bounds_open_and_closed():
    from vipr.config import Range

    assert Range(0, 1).allows(0) and Range(0, 1).allows(1)
    assert not Range(0, 1, low_open=True).allows(0) and not Range(0, 1, high_open=True).allows(1)
    assert not Range(0, None).allows(float("inf")) and not Range(None, None).allows(float("nan"))
    assert Range(1, None).describe(int) == "an integer >= 1" and Range(0, 1, low_open=True).describe(float) == \
        "a number in (0, 1]"


def test_unknown_key_suggests_the_full_dotted_key():
    from vipr.nas.search import build_config as build_search

    with pytest.raises(ConfigError, match=r"unknown config key 'batch_size' \(did you mean 'train.batch_size'\?\)"):
        build_search({"batch_size": 32})
    with pytest.raises(ConfigError, match=r"did you mean 'train.batch_size'"):
        build_config({"batch_size": 32})
    with pytest.raises(ConfigError, match=r"'method.queue_siz' \(did you mean 'method.queue_size'\?\)"):
        build_config({"method": {"queue_siz": 1}})  # a close sibling still wins


def test_malformed_yaml_is_one_line_naming_file_and_line(tmp_path):
    from vipr.config import load_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 1\n bad: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML \(line 3, column 2: "):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)


def test_describe_changes_names_the_differing_keys():
    from vipr.config import describe_changes

    old = to_dict(build_config({}))
    new = to_dict(build_config(apply_overrides({}, ["train.batch_size=32", "optim.lr=0.1", "train.progress=false"])))
    assert describe_changes(old, new) == "optim.lr: 0.12 -> 0.1, train.batch_size: 256 -> 32"  # progress: run-only
    assert "and 1 more" in describe_changes({"a": 1, "b": 1}, {"a": 2, "b": 2}, limit=1)


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1e-3", 1e-3), ("3E-5", 3e-5)])
def test_a_number_in_exponent_form_without_a_dot_is_a_number(text, value):
    """YAML 1.1 reads 5e-4 as a string; --set optim.weight_decay=5e-4 must still mean 0.0005."""
    assert build_config(apply_overrides({}, [f"optim.weight_decay={text}"])).optim.weight_decay == value


def test_text_for_a_number_is_still_refused():
    with pytest.raises(ConfigError, match="'optim.lr' must be a number"):
        build_config(apply_overrides({}, ["optim.lr=fast"]))
