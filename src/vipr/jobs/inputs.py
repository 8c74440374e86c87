"""Resolving a job's inputs before it is queued: the hook the dataset registry plugs its resolver into.

A resolver takes one ``Input`` and raises a ViprError naming what is wrong with it; the
default one knows registered dataset versions (``flowers:V2`` must exist in the metadata
database, vipr.platform.dataset_refs), built-in sources and paths on this machine. An input
with a ``mount`` lives on a job volume (the cluster's disk), which this machine cannot see:
unchecked here, unless its ref names a registered dataset version. The command's own
``--data NAME:VERSION`` is checked the same way, whatever the resolver.
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
    for value in _data_options(spec.command):
        try:
            _registered_dataset(value)
        except ViprError as err:
            raise ConfigError(f"command --data {value!r}: {err}") from None


def default_resolver(item: Input) -> None:
    """Registered dataset versions, built-in sources and paths on this machine; an input with a ``mount``
    lives on a job volume, unchecked here (unless it names a registered dataset version)."""
    if item.kind == "dataset" and _registered_dataset(item.ref):
        return
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
        found = ("neither a builtin: source nor an existing path (nor a registered dataset NAME:VERSION)"
                 if item.kind == "dataset" else "no file or folder")
        raise DataError(f"{item.ref!r} is {found}; fix the ref, or give the input a mount on a job volume")


def _registered_dataset(ref: str) -> bool:
    """Whether ``ref`` names a registered dataset version; a DatasetError when it names one that is not there."""
    from vipr.data.versions import registered

    return registered(ref) is not None


def _data_options(command) -> list[str]:
    """The values of the command's ``--data`` options."""
    words = list(command)
    return [words[i + 1] if word == "--data" else word[len("--data="):] for i, word in enumerate(words)
            if (word == "--data" and i + 1 < len(words)) or word.startswith("--data=")]
