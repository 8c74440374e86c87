"""The MoCo v2 core the neighbour methods share (CLIM, CsMl/HSA, SCAN): settings, table and refresh."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import nn

from vipr.config import COUNT, EPOCHS, NEIGHBOURS, Choices
from vipr.errors import ConfigError
from vipr.ssl.moco import MoCoConfig, MoCoV2
from vipr.ssl.neighbours import NeighbourTable, SelectFn, refresh_if_due


@dataclass(frozen=True)
class NeighbourMoCoConfig(MoCoConfig):
    symmetric: bool = False  # MoCo v2 as the papers build on it: one query per image
    neighbours: Annotated[int, NEIGHBOURS] = 5  # nearest neighbours kept per image
    warmup_epochs: Annotated[int, EPOCHS] = 10  # plain MoCo before the first feature bank
    refresh_every: Annotated[int, COUNT] = 5  # epochs between feature-bank refreshes
    use_faiss: Annotated[str, Choices("auto", "yes", "no")] = "auto"  # auto | yes | no
    keep_bank: bool = True  # the bank in checkpoints (float16, N x D); false at ImageNet scale

    def __post_init__(self) -> None:
        if self.symmetric:
            raise ConfigError(f"method.symmetric has no effect in {self.name}: its losses use one query per image "
                              "(MoCo v2 as published); drop the setting")
        if self.use_faiss not in ("auto", "yes", "no"):
            raise ConfigError(f"method.use_faiss must be auto, yes or no; got {self.use_faiss!r}")


class NeighbourMoCo(MoCoV2):
    """MoCo v2 with a ``NeighbourTable`` refreshed from the momentum encoder at each epoch start."""

    default_recipe = "moco_v2"

    def __init__(self, backbone: nn.Module, config: NeighbourMoCoConfig, select: SelectFn | None = None,
                 online: nn.Module | None = None):
        super().__init__(backbone, config, online=online)
        self.table = NeighbourTable(config.neighbours, config.refresh_every, config.warmup_epochs, select=select,
                                    use_faiss=config.use_faiss, keep_bank=config.keep_bank)

    def on_epoch_start(self, epoch: int) -> dict:
        return refresh_if_due(self.table, epoch, self.target.encoder.backbone, self.data)
