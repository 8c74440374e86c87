"""A model from its card: the architecture the card names, with the checkpoint's weights.

The engine reads and checks checkpoints but builds no model (it does not import this
package); evaluation, export and serving come here for the backbone.
"""

from __future__ import annotations

import os

from vipr.engine import checkpoint
from vipr.engine.card import DENSE_TASKS, ModelCard
from vipr.errors import CheckpointError
from vipr.models.backbones import Backbone, create_backbone


def build_model(card: ModelCard) -> Backbone:
    """A freshly initialised backbone of the card's architecture, with a head when the card has classes."""
    if card.task in DENSE_TASKS:
        raise CheckpointError(f"this is a {card.task} model ({card.architecture}, from `vipr transfer`), not a "
                              "backbone or classifier; use `vipr transfer eval|predict` or serve it")
    model = create_backbone(card.architecture, **card.architecture_kwargs)
    if card.num_classes:
        model.reset_head(card.num_classes)
    return model


def load_backbone(path: str | os.PathLike) -> tuple[Backbone, ModelCard]:
    """The backbone (with its head, if the checkpoint has one) and the checkpoint's card."""
    path = checkpoint.resolve_path(path)
    ckpt = checkpoint.load(path)
    card = checkpoint.read_card(ckpt, path)
    model = build_model(card)
    try:
        model.load_state_dict(ckpt["backbone"])
    except (RuntimeError, TypeError, AttributeError) as err:  # wrong shapes or keys, or no state dict at all
        raise CheckpointError(f"checkpoint {path} does not match backbone '{card.architecture}': {err}") from None
    return model, card
