"""Typed, frozen configuration: dataclasses built from YAML and dotted ``key=value`` overrides.

Unknown keys are errors with a "did you mean" (STYLE.md, practice 6). Values given as
strings on the command line are parsed as YAML scalars, then checked against the field's
type, so ``--set optim.lr=0.1`` gives a float and ``--set optim.lr=fast`` an error.

A field whose type is a registered *polymorphic* base (the method settings) is built as
the subclass named by its ``name`` key, so each method has its own typed settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from vipr.errors import ConfigError

T = TypeVar("T")

# base class -> {name: subclass}; filled by register_variant
_VARIANTS: dict[type, dict[str, type]] = {}


def register_variant(base: type, name: str):
    """Class decorator: make ``cls`` the settings type used when ``base``'s ``name`` is ``name``."""

    def wrap(cls: type) -> type:
        _VARIANTS.setdefault(base, {})[name] = cls
        return cls

    return wrap


def variant_names(base: type) -> list[str]:
    return sorted(_VARIANTS.get(base, {}))


def suggest(word: str, options: typing.Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` or a list of the valid options when nothing is close."""
    options = [f"{prefix}{o}" for o in options]
    close = difflib.get_close_matches(f"{prefix}{word}", options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; valid: {', '.join(sorted(options))}"


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, strictly (unknown keys raise ConfigError)."""
    data = dict(data or {})
    cls = _resolve_variant(cls, data, path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}{key}'{suggest(key, fields, prefix=path)}")
    for key in fields:  # a polymorphic section left out still gets its variant's type
        if key not in data and hints[key] in _VARIANTS:
            data[key] = {}
    kwargs = {key: _convert(hints[key], value, f"{path}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config{' in ' + path.rstrip('.') if path else ''}: {err}") from None


def _resolve_variant(cls: type, data: dict, path: str) -> type:
    if cls not in _VARIANTS:
        return cls
    name = data.get("name", cls.__dataclass_fields__["name"].default)
    if name not in _VARIANTS[cls]:
        raise ConfigError(f"unknown {path}name '{name}'{suggest(str(name), _VARIANTS[cls])}")
    return _VARIANTS[cls][name]


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check and coerce one value to its annotated type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{path}' must be a section (mapping), got {value!r}")
        return from_dict(hint, value, path + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {value!r}")
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        return origin(_convert(item, v, path) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"'{path}' must be one of {typing.get_args(hint)}, got {value!r}{suggest(str(value), map(str, typing.get_args(hint)))}")
        return value
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"'{path}' must be {getattr(hint, '__name__', hint)}, got {value!r}")


# Settings that change how a run is watched or stored, not what it computes: a resume may change them.
# may change on --resume: how a run is watched and guarded, not what it computes (on_nan: resume
# a run a non-finite loss stopped with train.on_nan=skip)
RUN_ONLY_KEYS = frozenset({"progress", "log_every", "checkpoint_every", "num_threads", "device", "on_nan"})


def without_run_only(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RUN_ONLY_KEYS}


def config_digest(settings: dict) -> str:
    """16 hex digits of the SHA-256 of a plain config dict (key order free): what a resume must match."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def to_dict(config: Any) -> dict:
    """Plain nested dict of a config (tuples become lists), for YAML and JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (value parsed as a YAML scalar)."""
    data = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. optim.lr=0.1")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return data


def _deep_copy(data: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
