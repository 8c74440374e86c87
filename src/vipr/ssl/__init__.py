"""Self-supervised methods; importing this package registers them all."""

from vipr.ssl import byol, clim, hsa, moco, nnclr, scan, simclr, supcon, supervised  # noqa: F401  (registration side effects)
from vipr.distill import bingo, feature, kd, seed  # noqa: F401,E402  (distillation methods: vipr distill)
from vipr.ssl.registry import MethodConfig, create_method, list_methods, method_recipe, register_method

__all__ = ["MethodConfig", "create_method", "list_methods", "method_recipe", "register_method"]
