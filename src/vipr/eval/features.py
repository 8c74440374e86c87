"""Frozen features for evaluation: the backbone to evaluate, and its pooled features of a split.

Features are computed once per split and cached as one (N, D) float32 tensor; kNN and the
linear probe then never touch images again.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.embedding import encode_split
from vipr.engine.card import RANDOM, ModelCard, make_card
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.progress import side_bar
from vipr.errors import ConfigError
from vipr.models import Backbone, create_backbone
from vipr.models.loading import load_backbone

MIN_BATCHES_FOR_BAR = 5  # fewer batches finish before a bar says anything useful


def load_eval_backbone(checkpoint: str, backbone: str | None = None,
                       image_size: int | None = None) -> tuple[Backbone, ModelCard]:
    """The backbone to evaluate and its card (preprocessing travels with the weights).

    ``checkpoint == "random"``: a seeded random-init ``backbone`` at ``image_size`` (both
    required), the floor a pre-trained backbone must beat. Otherwise the checkpoint file
    or run folder; ``image_size`` overrides the size it was trained at only when given, and
    ``backbone``, if given, must name the checkpoint's backbone.
    """
    if str(checkpoint) == RANDOM:
        return _random_backbone(backbone, image_size)
    model, card = load_backbone(checkpoint)
    if backbone is not None and backbone != card.architecture:
        raise ConfigError(f"--backbone {backbone} but checkpoint {checkpoint} holds a {card.architecture}; "
                          f"drop --backbone (it only picks the model for --checkpoint random)")
    if image_size is not None:
        card = replace(card, image_size=int(image_size))
    return model, card


def _random_backbone(name: str | None, image_size: int | None) -> tuple[Backbone, ModelCard]:
    if name is None:
        raise ConfigError("checkpoint 'random' needs a backbone to initialise; pass --backbone (e.g. resnet18)")
    if image_size is None:
        raise ConfigError("checkpoint 'random' has no recorded image size; pass --image-size (e.g. 32)")
    kwargs = {"small_stem": image_size <= 64}  # as pre-training picks it, so baselines compare like for like
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
        torch.manual_seed(0)
        model = create_backbone(name, **kwargs)
    card = make_card(architecture=name, architecture_kwargs=kwargs, image_size=image_size, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, method=RANDOM)
    return model, card


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    split_images: np.ndarray,
    *,
    image_size: int,
    mean,
    std,
    batch_size: int = 256,
    device: torch.device | str = "auto",
    precision: str = "auto",
    indices: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "features",
) -> torch.Tensor:
    """Pooled features ``backbone.forward_features`` of uint8 images, in eval mode.

    The backbone is put in eval mode, moved to ``device`` and to channels-last memory
    format in place. ``eval_transform`` resizes whole images on the device; bf16
    (or fp16) autocast follows ``resolve_precision(precision, device)``.

    Args:
        split_images: (N, 3, H, W) uint8, possibly a memmap (read ``batch_size`` rows at a time).
        indices: rows of ``split_images`` to use (a label split), in the order given; None = all.

    Returns:
        (len(indices) or N, D) float32 on the CPU.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    backbone.eval().to(device=device, memory_format=torch.channels_last)
    rows = np.arange(len(split_images)) if indices is None else np.asarray(indices, dtype=np.int64)
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    bar = side_bar(batches, desc=desc, unit="batch", enabled=progress and len(batches) >= MIN_BATCHES_FOR_BAR)
    blocks = (slice(batch[0], batch[-1] + 1) if indices is None else batch for batch in bar)  # a slice: one memmap read
    features = encode_split(backbone.forward_features, split_images, blocks, image_size=image_size, mean=mean,
                            std=std, device=device, precision=precision, out_device="cpu")  # (B, D) each
    return torch.cat([torch.zeros(0, backbone.feature_dim), *features])
