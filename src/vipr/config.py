"""Typed, frozen configuration: dataclasses built from YAML and dotted ``key=value`` overrides.

Unknown keys are errors with a "did you mean" (STYLE.md, practice 6). Values given as
strings on the command line are parsed as YAML scalars, then checked against the field's
type, so ``--set optim.lr=0.1`` gives a float and ``--set optim.lr=fast`` an error.

A field whose type is a registered *polymorphic* base (the method settings) is built as
the subclass named by its ``name`` key, so each method has its own typed settings.

Every numeric field declares its allowed values in its annotation, and ``from_dict`` checks
them when the config is read, naming the key, the value and the range::

    batch_size: Annotated[int, Range(1, 2**20)] = 256
    lr: Annotated[float, Range(0, 100, low_open=True)] = 0.3  # (0, 100]
    precision: Annotated[str, Choices("auto", "bf16", "fp16", "fp32")] = "auto"

A range or choice set on a list or tuple applies to each item; ``None`` (for ``int | None``)
is always allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

import yaml

from vipr.errors import ConfigError

T = TypeVar("T")

__all__ = ["Annotated", "Choices", "ConfigValueError", "Range", "from_dict"]


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


class ConfigValueError(ConfigError):
    """A config value of the wrong type or outside its declared range; knows its key for the CLI's flag names."""

    def __init__(self, key: str, value: Any, requirement: str):
        self.key, self.value, self.requirement = key, value, requirement
        super().__init__(self.describe(f"'{key}'"))

    def describe(self, name: str) -> str:
        return f"{name} must be {self.requirement}, got {self.value!r}"


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field, bounds included unless open; None = unbounded. NaN never passes."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self, kind: type) -> str:
        noun = "an integer" if kind is int else "a number"
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is None and self.high is None:
            return f"a finite {noun.split()[-1]}"
        if self.high is None:
            return f"{noun} {'>' if self.low_open else '>='} {low}"
        if self.low is None:
            return f"{noun} {'<' if self.high_open else '<='} {high}"
        return f"{noun} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number_text(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


@dataclass(frozen=True, init=False)
class Choices:
    """The values a field may take: ``Annotated[str, Choices("sgd", "lars")]``."""

    values: tuple

    def __init__(self, *values: Any):
        object.__setattr__(self, "values", values)

    def allows(self, value: Any) -> bool:
        return value in self.values

    def describe(self, kind: type) -> str:
        return f"one of {', '.join(map(str, self.values))}"


# The ranges config fields share. Upper bounds stop a typo (an extra digit, a missing minus sign in an
# exponent) before it allocates a tensor the machine cannot hold or trains a run that cannot converge.
SIDE_PX = Range(8, 4096)  # image sides, px (8: two stride-2 reductions still leave 2 px)
BATCH = Range(1, 2**20)  # images per step
EPOCHS = Range(0, 10**6)  # passes over the data
SEARCH_EPOCHS = Range(1, 10**6)  # the same, at least one
COUNT = Range(1, 10**9)  # steps, images, neighbours, episodes: at least one
COUNT_OR_OFF = Range(0, 10**9)  # the same where 0 means off / automatic
DIM = Range(1, 2**16)  # widths of layers and embeddings
QUEUE = Range(1, 2**24)  # queued keys (x proj_dim floats each; MoCo: 65,536 at ImageNet scale)
SEED = Range(0, 2**32 - 1)  # numpy's legacy seeding limit; torch takes 64 bits
PROB = Range(0, 1)  # probabilities, fractions, momenta, ratios
FRACTION = Range(0, 1, low_open=True)  # a share that must leave something: (0, 1]
BELOW_ONE = Range(0, 1, high_open=True)  # rates and thresholds that must stay below 1: [0, 1)
GRAD_CLIP = Range(0, 10**6, low_open=True)  # max gradient L2 norm
CELLS = Range(3, 1000)  # NAS cells: two reductions and at least one normal cell
NEIGHBOURS = Range(1, 10**4)  # nearest neighbours per image
STAGE = Range(-32, 31)  # backbone stage indices, negative from the end
LR = Range(0, 100, low_open=True)  # learning rates
WEIGHT_DECAY = Range(0, 1)
TEMPERATURE = Range(0, 100, low_open=True)  # softmax temperatures, Beta concentrations
THREADS = Range(0, 4096)  # 0 = torch's default
PRECISION = Choices("auto", "bf16", "fp16", "fp32")


class DeviceChoice(Choices):
    """A device name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (any index N) or ``mps``.

    Whether this machine has it is vipr.engine.device.resolve_device's question, asked before any work."""

    def __init__(self):
        super().__init__("auto", "cpu", "cuda", "cuda:N", "mps")

    def allows(self, value: Any) -> bool:
        return value in ("auto", "cpu", "cuda", "mps") or bool(re.fullmatch(r"cuda:\d+", str(value)))


DEVICE = DeviceChoice()


def constraints(hint: Any) -> tuple[Any, list]:
    """(the type, its Range / Choices declarations) of an annotation."""
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return base, [e for e in extras if isinstance(e, (Range, Choices))]
    return hint, []


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of dataclass ``cls``, ``Annotated`` declarations kept."""
    return typing.get_type_hints(cls, include_extras=True)


def _check_declared(hint: Any, value: Any, key: str) -> None:
    """Raise ConfigValueError when ``value`` (or an item of it) is outside the field's declared values."""
    base, declared = constraints(hint)
    items = value if isinstance(value, (list, tuple)) else [value]
    kind = _number_kind(base)
    for rule in declared:
        for item in items:
            if item is not None and not rule.allows(item):
                raise ConfigValueError(key, value, rule.describe(kind) + (" (each item)" if items is value else ""))


def _number_kind(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    inner = args[0]
    if typing.get_origin(inner) in (tuple, list):
        inner = typing.get_args(inner)[0] if typing.get_args(inner) else Any
    return inner if inner in (int, float) else float


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, strictly: unknown keys, wrong types and values
    outside a field's declared Range / Choices raise ConfigError naming the key."""
    data = dict(data or {})
    if not path:
        check_keys(cls, data)  # every unknown key, with a suggestion from the whole tree
    cls = _resolve_variant(cls, data, path)
    hints = field_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}{key}'{suggest(key, fields, prefix=path)}")
    for key in fields:  # a polymorphic section left out still gets its variant's type
        if key not in data and constraints(hints[key])[0] in _VARIANTS:
            data[key] = {}
    kwargs = {key: _convert(hints[key], value, f"{path}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config{' in ' + path.rstrip('.') if path else ''}: {err}") from None


def check_keys(cls: type, data: Mapping[str, Any], path: str = "", root: type | None = None,
               root_data: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError for the first unknown key in ``data``, suggesting the closest full dotted key."""
    root, root_data = root or cls, data if root_data is None else root_data
    cls = _resolve_variant(cls, dict(data), path)
    hints = field_hints(cls)
    for key, value in data.items():
        if key not in hints or not any(f.name == key and f.init for f in dataclasses.fields(cls)):
            names = [f.name for f in dataclasses.fields(cls) if f.init]
            raise ConfigError(f"unknown config key '{path}{key}'{_suggest_key(key, names, path, root, root_data)}")
        base = constraints(hints[key])[0]
        if dataclasses.is_dataclass(base) and isinstance(value, Mapping):
            check_keys(base, value, f"{path}{key}.", root, root_data)


def _suggest_key(key: str, siblings: list[str], path: str, root: type, root_data: Mapping) -> str:
    """A sibling close to ``key``, else a key anywhere in the tree whose last part is (close to) it."""
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{path}{close[0]}'?)"
    leaves = leaf_keys(root, root_data)
    by_last = {}
    for leaf in leaves:
        by_last.setdefault(leaf.rsplit(".", 1)[-1], []).append(leaf)
    last = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_last), n=1, cutoff=0.75)
    if last:
        return f" (did you mean {' or '.join(repr(k) for k in by_last[last[0]])}?)"
    return suggest(key, siblings, prefix=path)


def leaf_keys(cls: type, data: Mapping[str, Any] | None = None, path: str = "") -> list[str]:
    """Every dotted key of the config tree ``cls`` (polymorphic sections as ``data`` names them)."""
    data = data if isinstance(data, Mapping) else {}
    try:
        cls = _resolve_variant(cls, dict(data), path)
    except ConfigError:
        pass
    keys = []
    for name, hint in field_hints(cls).items():
        base = constraints(hint)[0]
        if dataclasses.is_dataclass(base):
            keys += leaf_keys(base, data.get(name), f"{path}{name}.")
        else:
            keys.append(f"{path}{name}")
    return keys


def _resolve_variant(cls: type, data: dict, path: str) -> type:
    if cls not in _VARIANTS:
        return cls
    name = data.get("name", cls.__dataclass_fields__["name"].default)
    if name not in _VARIANTS[cls]:
        raise ConfigError(f"unknown {path}name '{name}'{suggest(str(name), _VARIANTS[cls])}")
    return _VARIANTS[cls][name]


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check and coerce one value to its annotated type, and against its declared Range / Choices."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        converted = _convert(constraints(hint)[0], value, path)
        _check_declared(hint, converted, path)
        return converted
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
    if hint is float and isinstance(value, str):
        number = _float_or_none(value)  # YAML 1.1 reads 5e-4 (no dot) as text, not as a number
        if number is not None:
            return number
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigValueError(path, value, _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint))))


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


# Settings a --resume may change: how a run is watched and guarded, not what it computes (on_nan:
# resume a run a non-finite loss stopped with train.on_nan=skip; cache_gb: how much of the data stays mapped).
RUN_ONLY_KEYS = frozenset({"progress", "log_every", "checkpoint_every", "num_threads", "device", "on_nan",
                           "knn_every", "knn_k", "keep_best",  # the kNN probe watches, it does not train
                           "cache_gb"})


def without_run_only(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in RUN_ONLY_KEYS}


def config_changes(old: Mapping, new: Mapping, path: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (run-only keys ignored): what a resume names."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in RUN_ONLY_KEYS:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += config_changes(a, b, f"{path}{key}.")
        elif a != b:
            changes.append(f"{path}{key}: {a!r} -> {b!r}")
    return changes


def describe_changes(old: Mapping, new: Mapping, limit: int = 5) -> str:
    """``train.batch_size: 20 -> 32, optim.lr: 0.3 -> 0.1`` (at most ``limit``, then a count), for messages."""
    changes = config_changes(old or {}, new or {})
    if not changes:
        return "the saved config does not record the difference"
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


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
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory; pass a YAML file (e.g. a run folder's config.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8); pass a YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML ({_yaml_problem(err)}); fix it, or compare "
                          f"with a run folder's config.yaml") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + str(getattr(err, "problem", None) or err).strip()
