"""The job spec: one vipr training or evaluation command, and what it needs to run on a queue.

Read from YAML (``load_spec``) or built from a command line (``spec_from_command``, for
``vipr job submit -- vipr pretrain ...``); typed and frozen like every vipr config, so an
unknown key is an error with a "did you mean" and a bad value names its dotted key::

    name: pretrain-r18                 # DNS-1123 label: the Volcano Job's (and its pods') name
    command: [vipr, pretrain, --data, builtin:shapes, --epochs, "100"]
    inputs: [{kind: dataset, ref: builtin:shapes}]
    outputs: {run_dir: runs/pretrain-r18, register: {name: r18, alias: candidate}}
    resources: {nodes: 2, processes_per_node: 4, cpu: 4, memory: 64Gi, gpu: 1}
    queue: default
    retry: {max_retries: 2, on: [evicted]}
    timeout: 12h                       # per attempt
    volumes: {data_pvc: datasets, workspace_pvc: vipr-workspace}
    image: registry.example.com/vipr:0.1.0

``outputs.run_dir`` and the command's ``--out`` are one setting: give either (the other
follows; both given must agree; neither: ``runs/NAME``). The job starts the processes, so
the command must not carry ``--nproc-per-node``: set ``resources.processes_per_node``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import posixpath
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from vipr.config import Choices, Range, apply_overrides, check_keys, from_dict, load_yaml
from vipr.errors import ConfigError
from vipr.jobs.kube import ENV_NAME_RE, DnsLabel, DnsSubdomain, MemoryQuantity

# vipr's commands a job may run: command -> its subcommands (None: none; "*": any, e.g. eval's protocols)
COMMANDS: dict[str, Any] = {"pretrain": None, "distill": None, "nas": ("search", "train"),
                            "transfer": ("detect", "instance", "segment", "eval"), "eval": "*",
                            "version": None}  # version: the cheapest job, to check a queue or cluster runs vipr
ALLOWED = ("vipr pretrain, vipr nas search|train, vipr distill, vipr transfer detect|instance|segment|eval, "
           "vipr eval KIND, or vipr version to check the queue")
# commands that write checkpoint.pt into --out and continue it with --resume: a retried attempt resumes
RESUMABLE = {("pretrain",), ("distill",), ("nas", "search"), ("nas", "train"), ("transfer", "detect"),
             ("transfer", "instance"), ("transfer", "segment")}
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")  # the registry's rule (vipr model register --name)
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class Input:
    kind: Annotated[str, Choices("dataset", "checkpoint", "model")] = "dataset"
    ref: str = ""  # a data source (builtin:shapes, folder path), a checkpoint path, a model NAME[@ALIAS]
    mount: str | None = None  # absolute path of the ref inside the job's containers (on a job volume)


@dataclass(frozen=True)
class Register:
    name: str = ""  # registered model name: letters, digits, '.', '_', '-'
    alias: str | None = None


@dataclass(frozen=True)
class Outputs:
    run_dir: str | None = None  # relative to the workspace; None: the command's --out, else runs/NAME
    register: Register | None = None  # register the run's checkpoint when the command succeeds


@dataclass(frozen=True)
class Resources:
    nodes: Annotated[int, Range(1, 4096)] = 1  # pods, one per node
    processes_per_node: Annotated[int, Range(1, 1024)] = 1  # torchrun processes in each pod
    cpu: Annotated[float, Range(0, 1024, low_open=True)] = 1.0  # cores per process
    memory: Annotated[str, MemoryQuantity()] = "4Gi"  # per pod: all its processes together
    gpu: Annotated[int, Range(0, 64)] = 0  # GPUs per process


@dataclass(frozen=True)
class Retry:
    max_retries: Annotated[int, Range(0, 100)] = 2  # restarts of the whole job, each resuming the checkpoint
    on: Annotated[tuple[str, ...], Choices("failed", "evicted", "timeout")] = ("evicted",)


@dataclass(frozen=True)
class Volumes:
    data_pvc: Annotated[str | None, DnsSubdomain()] = None  # PersistentVolumeClaim mounted read-only at /data
    workspace_pvc: Annotated[str | None, DnsSubdomain()] = None  # mounted at /workspace: run folders, VIPR_HOME


@dataclass(frozen=True)
class JobSpec:
    name: Annotated[str, DnsLabel()] = ""
    command: tuple[str, ...] = ()
    inputs: tuple[Input, ...] = ()
    outputs: Outputs = Outputs()
    resources: Resources = Resources()
    queue: Annotated[str, DnsSubdomain()] = "default"
    priority: Annotated[int, Range(-10**9, 10**9)] = 0  # the local queue's order; Volcano uses priority_class
    priority_class: Annotated[str | None, DnsSubdomain()] = None  # a Kubernetes PriorityClass name
    retry: Retry = Retry()
    timeout: Annotated[int | None, Range(1, 10**8)] = None  # seconds per attempt; YAML may say 2h, 30m, 1h30m
    env: Any = dataclasses.field(default_factory=dict)  # str -> str, checked by _env (from_dict has no dict type)
    volumes: Volumes = Volumes()
    image: str | None = None  # container image with vipr installed (Volcano); --image overrides


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> JobSpec:
    """The JobSpec in YAML file ``path``, ``key=value`` overrides applied; ConfigError naming the file and key."""
    data = apply_overrides(load_yaml(path), overrides)
    try:
        return parse_spec(data)
    except ConfigError as err:
        raise ConfigError(f"job spec {path}: {err}") from None


def spec_from_command(argv: Sequence[str], name: str | None = None, overrides: Sequence[str] = ()) -> JobSpec:
    """The JobSpec of ``vipr job submit [--name NAME] -- vipr pretrain ...``: defaults plus overrides."""
    data = apply_overrides({"name": name or default_name(argv), "command": list(argv)}, overrides)
    return parse_spec(data)


def parse_spec(data: Mapping[str, Any]) -> JobSpec:
    """A checked JobSpec from a plain mapping (the YAML's), its run folder resolved into the command."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a job spec must be a mapping of keys (name, command, ...), got {data!r}")
    data = dict(data)
    if isinstance(data.get("retry"), Mapping) and True in data["retry"]:  # YAML 1.1 reads a bare `on:` key as true
        data["retry"] = {("on" if k is True else k): v for k, v in data["retry"].items()}
    check_keys(JobSpec, data)  # every unknown key first, with a suggestion from the whole tree
    if "inputs" in data:
        data["inputs"] = _inputs(data["inputs"])
    if "env" in data:
        data["env"] = _env(data["env"])
    if data.get("timeout") is not None:
        data["timeout"] = parse_duration(data["timeout"])
    spec = from_dict(JobSpec, data)
    if not spec.name:
        raise ConfigError("the job spec has no 'name'; give one, a DNS-1123 label such as pretrain-r18")
    check_command(spec.command)
    _check_outputs(spec.outputs)
    return _with_run_dir(spec)


def _inputs(value: Any) -> tuple[Input, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"'inputs' must be a list of {{kind, ref, mount}} entries, got {value!r}")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"'inputs[{i}]' must be a mapping with kind and ref, got {item!r}")
        entry = from_dict(Input, item, f"inputs[{i}].")
        if not entry.ref:
            raise ConfigError(f"'inputs[{i}].ref' is missing; name the {entry.kind} the command reads")
        if entry.mount is not None and not posixpath.isabs(entry.mount):
            raise ConfigError(f"'inputs[{i}].mount' must be an absolute path in the container, got {entry.mount!r}")
        items.append(entry)
    return tuple(items)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"'env' must be a mapping of NAME: value, got {value!r}")
    env = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise ConfigError(f"'env' name {key!r} is not a variable name (letters, digits and '_', not first a digit)")
        if item is None or isinstance(item, (Mapping, list)):
            raise ConfigError(f"'env.{key}' must be a string, got {item!r}; quote it in the YAML")
        env[key] = str(item).lower() if isinstance(item, bool) else str(item)  # YAML true -> "true", as a shell says
    return env


def parse_duration(value: Any, key: str = "timeout") -> int:
    """Whole seconds (rounded up) of ``7200``, ``"2h"``, ``"30m"``, ``"1h30m"`` or ``"90s"``; > 0."""
    match = _DURATION_RE.match(value.strip()) if isinstance(value, str) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = float(value)
    elif match and any(match.groups()):
        hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ConfigError(f"'{key}' must be seconds or a duration such as 2h, 30m or 1h30m, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"'{key}' must be > 0 seconds, got {value!r}")
    return math.ceil(seconds)


def command_name(command: Sequence[str]) -> tuple[str, ...] | None:
    """``("nas", "search")`` for ``vipr nas search ...``; None when it is no command a job may run."""
    words = list(command)
    if len(words) < 2 or words[0] != "vipr" or words[1] not in COMMANDS:
        return None
    subs = COMMANDS[words[1]]
    if subs is None:
        return (words[1],)
    if len(words) < 3 or words[2].startswith("-") or (subs != "*" and words[2] not in subs):
        return None
    return words[1], words[2]


def check_command(command: Sequence[str]) -> None:
    """ConfigError unless ``command`` is a vipr training or evaluation command the job can launch."""
    if not command:
        raise ConfigError("the job spec has no 'command'; give the vipr command to run, e.g. "
                          "[vipr, pretrain, --data, builtin:shapes]")
    if command_name(command) is None:
        raise ConfigError(f"'command' must be a vipr training or evaluation command ({ALLOWED}), "
                          f"got {shlex.join(command)!r}")
    if any(w == "--nproc-per-node" or w.startswith("--nproc-per-node=") for w in command):
        raise ConfigError("'command' sets --nproc-per-node; set resources.processes_per_node instead "
                          "(the job starts that many processes in each pod)")


def check_arguments(command: Sequence[str]) -> None:
    """Parse ``command`` with this vipr's own parser, so a misspelt option fails now, not in a queued job."""
    from vipr.cli.main import build_parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(list(command[1:]))
    except SystemExit:
        lines = [line for line in errors.getvalue().splitlines() if ": error: " in line]
        problem = lines[-1].replace(": error: ", ": ", 1) if lines else "see its --help"
        raise ConfigError(f"'command' does not parse: {problem}") from None


def _check_outputs(outputs: Outputs) -> None:
    if outputs.register is not None and not MODEL_NAME_RE.match(outputs.register.name):
        raise ConfigError(f"'outputs.register.name' must be a model name (letters, digits, '.', '_', '-'), "
                          f"got {outputs.register.name!r}")


def _out_flag(command: Sequence[str]) -> str | None:
    for i, word in enumerate(command):
        if word == "--out" and i + 1 < len(command):
            return command[i + 1]
        if word.startswith("--out="):
            return word[len("--out="):]
    return None


def _with_run_dir(spec: JobSpec) -> JobSpec:
    """outputs.run_dir and the command's --out made one value (the command gets --out when it has none)."""
    out, given = _out_flag(spec.command), spec.outputs.run_dir
    if out and given and posixpath.normpath(out) != posixpath.normpath(given):
        raise ConfigError(f"outputs.run_dir {given!r} and the command's --out {out!r} differ; give one of them")
    run_dir = given or out or f"runs/{spec.name}"
    command = spec.command if out else (*spec.command, "--out", run_dir)
    return replace(spec, command=tuple(command), outputs=replace(spec.outputs, run_dir=run_dir))


def resumable(spec: JobSpec) -> bool:
    """Whether a retried attempt can continue the command's checkpoint with --resume."""
    return command_name(spec.command) in RESUMABLE and "--resume" not in spec.command


def default_name(command: Sequence[str]) -> str:
    """``nas-search-0612-143501``: the command's words and the time, a DNS-1123 label."""
    words = command_name(command) or ("job",)
    stem = re.sub(r"[^a-z0-9-]+", "-", "-".join(words).lower()).strip("-")[:40] or "job"
    return f"{stem}-{time.strftime('%m%d-%H%M%S')}"
