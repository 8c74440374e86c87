"""Method registry: ``register_method``, ``create_method``, ``list_methods``.

A method is an ``nn.Module`` built from a backbone and its typed settings (a subclass of
``MethodConfig`` registered under the same name). Its ``forward(views, batch)`` returns a
dict of scalar tensors holding at least ``loss``; ``on_step_end(progress)`` runs after each
optimizer step (momentum encoders, queues), ``progress`` in [0, 1] over the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from vipr.config import register_variant, suggest
from vipr.errors import ConfigError


@dataclass(frozen=True)
class MethodConfig:
    """Settings every method has; each method's config subclasses it."""

    name: str = "moco_v2"
    recipe: str = ""  # augmentation recipe; "" = the method's own default
    proj_hidden_dim: int = 2048
    proj_dim: int = 128


_METHODS: dict[str, Callable[..., nn.Module]] = {}


def register_method(name: str, config_cls: type[MethodConfig]):
    """Class decorator registering a method module and its settings type under ``name``."""

    def wrap(cls):
        register_variant(MethodConfig, name)(config_cls)
        _METHODS[name] = cls
        cls.method_name = name
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def create_method(config: MethodConfig, backbone: nn.Module) -> nn.Module:
    if config.name not in _METHODS:
        raise ConfigError(f"unknown method '{config.name}'{suggest(config.name, _METHODS)}")
    return _METHODS[config.name](backbone, config)


def projection_head(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """MLP projector: (Linear-BN-ReLU) x (layers - 1), then Linear (SimCLR / MoCo v2 style)."""
    blocks, dim = [], in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*blocks)
