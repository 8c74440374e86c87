"""What every pre-training method shares as a training task (vipr.engine.task): views in, backbone out.

A method is built with the objects it draws from (``vipr.ssl.create_method`` binds them): a
:class:`vipr.data.views.ViewMaker` for the recipe's views and, for neighbour methods, the
:class:`vipr.data.train_data.TrainData` of the train split. Its ``training_step(batch)`` draws
the views of ``batch.images`` and hands them to ``forward_views(views, batch)``, the method's
own computation (one screen: the loss of a list of views). Mix in before ``nn.Module``.
"""

from __future__ import annotations

from torch import Tensor, nn

from vipr.data.augment import ViewSpec
from vipr.data.batch import Batch
from vipr.data.train_data import TrainData
from vipr.data.views import ViewMaker
from vipr.engine.task import TaskBase
from vipr.errors import ContractError


class PretrainMethod(TaskBase):
    """Methods set ``online`` (an encoder with ``.backbone``) and define ``forward_views``."""

    default_recipe = "moco_v2"  # augmentation recipe when method.recipe is "" (vipr.data.augment)
    views: ViewMaker | None = None  # bound by create_method; None in unit tests that pass views directly
    data: TrainData | None = None  # the train split, for methods that look beyond their batch

    def bind(self, views: ViewMaker | None, data: TrainData | None) -> None:
        self.views = None if views is None else views.with_specs(self.expand_views(list(views.specs)))
        self.data = data

    def expand_views(self, specs: list[ViewSpec]) -> list[ViewSpec]:
        """The views this method draws, from the recipe's (CLIM adds a low-resolution query; supervised keeps one)."""
        return specs

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        if self.views is None:
            raise ContractError(f"{type(self).__name__} has no view maker; build it with "
                                "vipr.ssl.create_method(config, backbone, views=ViewMaker(...))")
        if batch.crops is not None:  # the encoded store cropped at decode: flips and colour remain
            return self.forward_views(self.views.from_crops(batch.crops), batch)
        return self.forward_views(self.views(batch.images), batch)

    def forward_views(self, views: list[Tensor], batch: Batch | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def deployable(self) -> nn.Module:
        return self.online.backbone
