"""Method registry: ``register_method``, ``create_method``, ``list_methods``, ``method_recipe``.

A method is a training task (``vipr.engine.task.TrainingTask``): an ``nn.Module`` mixing in
``vipr.ssl.method.PretrainMethod``, built from a backbone and its typed settings (a subclass
of ``MethodConfig`` registered under the same name), then bound to the objects it draws
from: a view maker (the recipe's views and the run's generator) and the train split.

- ``forward_views(views, batch)``: the method itself; ``views`` is a list of (B, 3, S, S)
  float views (``expand_views`` picks which), ``batch`` the step's ``Batch`` (labels,
  indices); returns 0-dim tensors, ``loss`` at least. ``training_step(batch)`` (from
  PretrainMethod) draws the views and calls it.
- ``on_step_end(progress)``: after each optimizer step (momentum encoders), ``progress`` in
  (0, 1] over the whole run; ``on_epoch_start(epoch)``: feature banks. Both optional.
- ``default_recipe``: the augmentation recipe when ``method.recipe`` is empty.
- ``deployable()``: ``online.backbone``, the weights a checkpoint ships.

Adding a method is one file and one line in ``vipr/ssl/__init__.py`` (docs/architecture.md)::

    @register_method("mine", MyConfig)        # MyConfig(MethodConfig), frozen, name="mine"
    class Mine(PretrainMethod, nn.Module):
        def __init__(self, backbone, config): ...
        def forward_views(self, views, batch): return {"loss": ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

from torch import nn

from vipr.config import DIM, register_variant, suggest
from vipr.errors import ConfigError


@dataclass(frozen=True)
class MethodConfig:
    """Settings every method has; each method's config subclasses it."""

    name: str = "moco_v2"
    recipe: str = ""  # augmentation recipe; "" = the method's own default
    proj_hidden_dim: Annotated[int, DIM] = 2048
    proj_dim: Annotated[int, DIM] = 128
    proj_batch_norm: bool = True  # BatchNorm after each hidden layer of the projector


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


def create_method(config: MethodConfig, backbone: nn.Module, views=None, data=None) -> nn.Module:
    """The method ``config.name`` around ``backbone``, drawing views from ``views`` (a ViewMaker of the
    recipe's views; the method may add or drop some) and reading the train split from ``data``."""
    method = _METHODS[_checked(config.name)](backbone, config)
    method.bind(views, data)
    return method


def method_recipe(config: MethodConfig) -> str:
    """The augmentation recipe a method trains with: ``config.recipe``, else the method's default."""
    return config.recipe or _METHODS[_checked(config.name)].default_recipe


def _checked(name: str) -> str:
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'{suggest(name, _METHODS)}")
    return name


def projection_head(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2,
                    batch_norm: bool = True) -> nn.Sequential:
    """MLP projector: (Linear-BN-ReLU) x (layers - 1), then Linear (SimCLR / MoCo v2 style).

    Without ``batch_norm`` the hidden layers are Linear-ReLU with a bias (MoCo v2's own head)."""
    blocks, dim = [], in_dim
    for _ in range(layers - 1):
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm), *norm, nn.ReLU(inplace=True)]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*blocks)
