"""Opening a registered dataset version (``NAME:V2``): its recorded source, checked against the registered digest.

``open_dataset`` and ``open_dense`` call ``registered(src)`` first; for a reference they open the
version's resolved source here, so every command that takes ``--data`` accepts one. The opened
store's digest must equal the registered one (else: the data changed since it was registered).
A version records the store size it was registered at; asked for another size, the data is
first checked at the registered size, then opened at the asked one (so that card's digest is of
that size). The opened dataset is named ``NAME:Vn``: cards, label splits and tags name the version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

KIND_COMMANDS = {"classification": "vipr pretrain, eval, nas, distill, features or data split",
                 "dense": "vipr transfer or data export"}


def registered(src: str):
    """The ``DatasetVersion`` that ``src`` names, or None for every other form of SRC (no database opened)."""
    from vipr.platform import dataset_refs

    if dataset_refs.parse(src) is None:  # builtin:, coco:ROOT, an existing path: never a database look-up
        return None
    return dataset_refs.lookup(src)


def open_version(version, kind: str, opener: Callable, store_size: int | None, **options):
    """``opener(version.resolved, store_size=..., **options)`` checked against ``version``; named ``NAME:Vn``.

    ``kind``: what the caller opens (classification | dense); a version of the other kind is an error."""
    from vipr.platform import dataset_refs
    from vipr.platform.datasets import DatasetError

    if version.kind != kind:
        raise DatasetError(f"dataset {version.ref} is {_article(version.kind)} {version.kind} dataset "
                           f"({version.resolved}); use it with {KIND_COMMANDS[version.kind]}")
    dataset_refs.check_source_exists(version)
    opened = opener(version.resolved, store_size=version.store_size, **options)
    dataset_refs.check_unchanged(version, opened.digest)
    if store_size is not None and store_size != version.store_size:
        opened = opener(version.resolved, store_size=store_size, **options)
    fields = {"name": version.ref}
    if hasattr(opened, "source"):
        fields["source"] = version.resolved
    return replace(opened, **fields)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
