"""The backbone a transfer run starts from: ``--checkpoint`` resolved to a vipr backbone and its preprocessing.

``--checkpoint`` is one of

* ``random``: a seeded random-init ``--backbone`` (default resnet18), the floor pre-training must beat;
* a vipr run folder or ``.pt`` (pre-training, ``vipr nas train``, an eval classifier): the card's
  architecture, mean and std; a classifier's head is left out;
* a registered model ``NAME``, ``NAME/VERSION`` or ``NAME@ALIAS`` (vipr.platform.registry);
* a torchvision or timm state-dict file (``.pth``, ``.safetensors``) for ``--backbone``.

Weights load by name and shape through vipr.models.init_weights, whose report (matched, missing,
unexpected, other shape) is printed and written to the run folder: nothing is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.engine import checkpoint as ckpt
from vipr.engine.card import DENSE_TASKS, RANDOM, ModelCard, Parent
from vipr.errors import CheckpointError, ConfigError
from vipr.models.backbones import Backbone, create_backbone
from vipr.models.init_weights import InitReport, initialise

DEFAULT_BACKBONE = "resnet18"
FLAG = "--checkpoint"


@dataclass(frozen=True)
class InitialBackbone:
    """A backbone ready for a detection or segmentation head, with where it came from."""

    backbone: Backbone
    architecture: str
    architecture_kwargs: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str  # how its weights were trained: moco_v2, supervised, random, external
    parent: Parent
    report: InitReport | None = None  # what loading the weights matched and skipped; None for random init


def initial_backbone(checkpoint: str, backbone: str | None, image_size: int, announce: bool = True) -> InitialBackbone:
    """Resolve ``checkpoint`` (see the module docstring) and load it; ConfigError / CheckpointError naming the fix."""
    if checkpoint == RANDOM:  # the seeded random-init baseline evaluation uses, so the floors compare
        from vipr.eval.features import load_eval_backbone

        model, card = load_eval_backbone(RANDOM, backbone or DEFAULT_BACKBONE, image_size)
        return InitialBackbone(model, card.architecture, dict(card.architecture_kwargs), card.mean, card.std, RANDOM,
                               Parent(RANDOM))
    from vipr.platform.registry import resolve_source

    path = ckpt.resolve_path(resolve_source(checkpoint, FLAG))
    card = _card_of(path)
    if card is None:  # a foreign state dict: ImageNet-style weights, so the standard stem
        name = backbone or DEFAULT_BACKBONE
        kwargs, mean, std, method = {"small_stem": False}, IMAGENET_MEAN, IMAGENET_STD, "external"
    else:
        if backbone is not None and backbone != card.architecture:
            raise ConfigError(f"--backbone {backbone} but {FLAG} {checkpoint} holds a {card.architecture}; drop "
                              "--backbone (it picks the model of random init or of a plain state-dict file)")
        name, mean, std, method = card.architecture, card.mean, card.std, card.method
        kwargs = {k: v for k, v in card.architecture_kwargs.items() if k != "num_classes"}
    model = create_backbone(name, **kwargs)
    report = initialise(model, path, name, announce=announce, flag=FLAG)
    return InitialBackbone(model, name, kwargs, tuple(mean), tuple(std), method, ckpt.parent_record(str(path)), report)


def _card_of(path: Path) -> ModelCard | None:
    """The card of a vipr checkpoint; None for any other weights file. A transfer model is refused."""
    try:
        card = ckpt.load_card(path)
    except CheckpointError:
        return None
    if card.task in DENSE_TASKS:
        raise ConfigError(f"{FLAG} {path} is already a {card.task} model; start from a backbone (a pre-training "
                          "run, a classifier, random), or evaluate it with `vipr transfer eval`")
    return card
