"""Resolving a job's inputs before it is queued: the hook the dataset registry plugs its resolver into.

A resolver takes one ``Input`` and raises a ViprError naming what is wrong with it; the
default one knows built-in sources and paths on this machine. An input with a ``mount``
lives on a job volume (the cluster's disk), which this machine cannot see: unchecked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from vipr.errors import ConfigError, DataError, ViprError
from vipr.jobs.spec import Input, JobSpec

Resolver = Callable[[Input], None]  # raises ViprError naming what is wrong with the input


def check_inputs(spec: JobSpec, resolver: Resolver | None = None) -> None:
    """Resolve every input (the dataset registry plugs its resolver in here); ConfigError naming the ref."""
    resolver = resolver or default_resolver
    for i, item in enumerate(spec.inputs):
        try:
            resolver(item)
        except ViprError as err:
            raise ConfigError(f"inputs[{i}] ({item.kind} {item.ref!r}): {err}") from None


def default_resolver(item: Input) -> None:
    """Built-in sources and paths on this machine; an input with a ``mount`` lives on a job volume, unchecked here."""
    if item.mount is not None:
        return
    if item.kind == "model":
        if not re.match(r"^[A-Za-z0-9._-]+([@/][A-Za-z0-9._-]+)?$", item.ref):
            raise ConfigError("a model ref is NAME, NAME@ALIAS or NAME/VERSION")
        return
    if item.kind == "dataset" and item.ref.startswith("builtin:"):
        return
    path = re.sub(r"^[a-z]+:(?!//)", "", item.ref) if item.kind == "dataset" else item.ref  # coco:ROOT -> ROOT
    if not Path(path).exists():
        found = "neither a builtin: source nor an existing path" if item.kind == "dataset" else "no file or folder"
        raise DataError(f"{item.ref!r} is {found}; fix the ref, or give the input a mount on a job volume")
