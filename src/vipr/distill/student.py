"""The student network: the backbone pre-training built, or the darts_net of a NAS genotype.

Pre-training builds ``create_backbone(model.backbone, small_stem=...)``, which takes no
genotype. A distillation run whose student is a genotype (``method.student_genotype``, set by
``vipr distill --student FILE``) therefore gets a ``darts_net`` from pre-training and swaps it
here, before any optimizer, device move or DDP sees it, for the darts_net of the genotype with
the same stem; :mod:`vipr.distill.run` writes the returned kwargs into the card so that
``create_backbone("darts_net", **kwargs)`` rebuilds the checkpoint's network (vipr eval, serve).
"""

from __future__ import annotations

from torch import nn

from vipr.distill.settings import DistillConfig
from vipr.errors import ConfigError
from vipr.models import create_backbone
from vipr.nas import genotype as genotypes
from vipr.nas.network import DartsNetwork

DARTS_DEFAULT_LAYERS = 8  # darts_net's own default cell count


def student_network(backbone: nn.Module, config: DistillConfig) -> tuple[nn.Module, dict | None]:
    """(the student, its darts_net kwargs for the card, or None when it is ``backbone`` itself)."""
    if not config.student_genotype:
        return backbone, None
    if not isinstance(backbone, DartsNetwork):
        raise ConfigError(f"method.student_genotype {config.student_genotype} makes the student a darts_net, but "
                          f"model.backbone built a {type(backbone).__name__}; set model.backbone=darts_net "
                          "(vipr distill --student FILE does)")
    genotype, layers = _genotype_and_layers(config)
    kwargs = {"genotype": genotype.to_dict(), "channels": config.student_channels, "layers": layers,
              "small_stem": backbone.stem[0].stride == (1, 1)}  # the stem model.small_stem chose (stride 1)
    return create_backbone("darts_net", **kwargs), kwargs


def check_student_genotype(config: DistillConfig) -> None:
    """Every structural error of a genotype student before any work (a ConfigError naming the fix)."""
    if config.student_genotype:
        genotype, layers = _genotype_and_layers(config)
        DartsNetwork(genotype, config.student_channels, layers)  # built and dropped: its errors now


def _genotype_and_layers(config: DistillConfig) -> tuple[genotypes.Genotype, int]:
    genotype = genotypes.load(config.student_genotype)
    return genotype, config.student_layers or (len(genotype.cells) if genotype.cells else DARTS_DEFAULT_LAYERS)
