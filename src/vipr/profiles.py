"""Defaults by image size: one recipe for small images (<= 64 px), the papers' for large ones.

The papers tune on ImageNet at 224 px; on 32 px images some of their settings cost many kNN
points (docs/peer_quality.md, the ablation against lightly). So a config section may
declare ``SMALL_IMAGES``, a ClassVar mapping its field names to the small-image values. A
run whose ``data.profile`` resolves to ``small`` takes them for every field the user left
out; a value given by ``--config``, ``--set`` or a flag always wins. ``auto`` picks
``small`` at ``data.image_size`` <= 64 px. The resolved profile and every resolved value
land in the run's config.yaml, so a run folder states the recipe it used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

SMALL_IMAGE_SIDE = 64  # px: at or below this, the small-image recipe
PROFILES = ("auto", "small", "large")


def resolve_profile(profile: str, image_size: int) -> str:
    """``small`` or ``large``: ``profile`` itself, or the one ``auto`` picks for ``image_size`` px."""
    if profile != "auto":
        return profile
    return "small" if image_size <= SMALL_IMAGE_SIDE else "large"


def apply_profile(config: Any, given: Mapping[str, Any]) -> Any:
    """``config`` (sectioned dataclass with ``data.profile``) with its profile's values where
    ``given`` (the raw nested settings the user wrote) leaves a field out."""
    profile = resolve_profile(config.data.profile, config.data.image_size)
    changes = {"data": dataclasses.replace(config.data, profile=profile)}
    if profile == "small":
        for section in dataclasses.fields(config):
            current = changes.get(section.name, getattr(config, section.name))
            user = given.get(section.name) or {}
            small = {k: v for k, v in getattr(current, "SMALL_IMAGES", {}).items() if k not in user}
            if small:
                changes[section.name] = dataclasses.replace(current, **small)
    return dataclasses.replace(config, **changes)
