"""Multi-view augmentation recipes for self-supervised pre-training, run on the training device.

Images arrive as a uint8 batch (B, 3, H, W) already on the device that trains; every
view is produced for the whole batch at once with per-sample random parameters drawn
from one CPU ``torch.Generator`` (DESIGN.md, principle 1). The ops themselves live in
:mod:`vipr.data.augment_ops` (crop, grayscale, blur, solarize, normalize) and
:mod:`vipr.data.augment_color` (colour jitter) and are re-exported here.

Recipes follow the papers' ImageNet pipelines. For images smaller than 64 px the blur
is switched off, as the CIFAR recipes of solo-learn and lightly do (a 3 px kernel on a
32 px image mostly destroys the little detail there is), while the crop scale keeps the
recipe's lower bound (0.2 for MoCo v2, 0.08 for SimCLR and BYOL).

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> views = augment_views(images, get_recipe("moco_v2", 32), generator=g)
    >>> [tuple(v.shape) for v in views]
    [(8, 3, 32, 32), (8, 3, 32, 32)]
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.data.augment_color import color_jitter
from vipr.data.augment_ops import (
    as_float_image,
    coin_flips,
    flipped_float_image,
    gaussian_blur,
    normalize,
    normalize_into,
    random_grayscale,
    random_resized_crop,
    solarize,
)
from vipr.data.photometric import apply_photometric, chunks, draw_photometric
from vipr.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ViewSpec",
    "augment_crops",
    "augment_views",
    "color_jitter",
    "eval_transform",
    "gaussian_blur",
    "get_recipe",
    "list_recipes",
    "register_recipe",
    "normalize",
    "random_grayscale",
    "random_resized_crop",
    "solarize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE_SIDE = 64  # px; below this the recipes drop the Gaussian blur


@dataclass(frozen=True)
class ViewSpec:
    """How to draw one view: crop, flip, colour jitter, grayscale, blur, solarize (all per sample)."""

    size: int  # output side in pixels
    scale: tuple[float, float] = (0.08, 1.0)  # crop area, fraction of the image area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio, width / height
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue (turns)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels
    solarize_threshold: float = 0.5  # on the [0, 1] intensity scale

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"ViewSpec.size must be a positive number of pixels, got {self.size}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ConfigError(f"ViewSpec.scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"ViewSpec.ratio must satisfy 0 < low <= high, got {self.ratio}")
        if min(self.jitter) < 0.0 or self.jitter[3] > 0.5:
            raise ConfigError(f"ViewSpec.jitter strengths must be >= 0 with hue <= 0.5, got {self.jitter}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"ViewSpec.{name} is a probability in [0, 1], got {getattr(self, name)}")


def augment_view(x: Tensor, view: ViewSpec, generator: torch.Generator | None = None, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """One view of a float batch: crop and flip, then :func:`photometric` (normalised when given ``mean``, ``std``).

    Args:
        x: (B, 3, H, W) float in [0, 1].

    Returns:
        (B, 3, S, S) float, S = ``view.size``: in [0, 1], or normalised.
    """
    x = random_resized_crop(x, view.size, view.scale, view.ratio, view.flip_p, generator)
    return photometric(x, view, generator, mean=mean, std=std)


def augment_cropped(x: Tensor, view: ViewSpec, generator: torch.Generator | None = None, *,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """One view of a batch whose crop was taken at decode (``vipr.data.decode``).

    The flip and the photometric ops of :func:`augment_view`, per sample; ``x`` is
    (B, 3, S, S) uint8 or float in [0, 1] with S = ``view.size``."""
    if x.shape[-2:] != (view.size, view.size):
        raise ValueError(f"a crop of this view must be {view.size} px square, got {tuple(x.shape[-2:])}")
    flip = coin_flips(len(x), view.flip_p, generator)
    return photometric(x, view, generator, flip=flip, mean=mean, std=std)


def photometric(x: Tensor, view: ViewSpec, generator: torch.Generator | None = None, *, flip: Tensor | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Colour jitter, grayscale, blur and solarize of ``view`` on a (B, 3, S, S) batch.

    ``x`` is uint8, or float in [0, 1]. ``flip`` (B,) bool mirrors those samples first; with
    ``mean`` and ``std`` the result is normalised. Parameters are drawn for the whole batch,
    then the ops run chunk by chunk on the CPU (``vipr.data.photometric``: the same result,
    computed in cache).

    Returns:
        (B, 3, S, S) float, channels-last: in [0, 1], or normalised.
    """
    draw = draw_photometric(len(x), view, generator)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    out = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=torch.channels_last)
    if mean is not None:
        mean_t = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        inv_std = 1.0 / torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    for part in chunks(len(x), x.shape[-1], x.device):
        if flip is None:
            chunk = as_float_image(x[part])
        else:
            chunk = flipped_float_image(x[part], flip[part].to(x.device).view(-1, 1, 1, 1))
        chunk = apply_photometric(chunk, draw.rows(part), view)
        if mean is None:
            out[part] = chunk
        else:
            normalize_into(out[part], chunk, mean_t, inv_std)
    return out


def augment_views(
    images_uint8: Tensor,
    views: Sequence[ViewSpec],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Draw every view of a batch, normalised and channels-last, on the batch's device.

    Args:
        images_uint8: (B, 3, H, W) uint8 (a float batch in [0, 1] is accepted too).
        views: one ViewSpec per view, e.g. ``get_recipe("moco_v2", 224)``.
        mean, std: per-channel normalisation on the [0, 1] scale.
        generator: CPU generator; the same seed gives the same views on any device.

    Returns:
        One float32 (B, 3, S, S) tensor per view, ``torch.channels_last``.
    """
    if images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images_uint8.shape)}")
    x = as_float_image(images_uint8)  # converted once, shared by all views
    return [augment_view(x, view, generator, mean=mean, std=std) for view in views]


def augment_crops(
    crops: Sequence[Tensor],
    views: Sequence[ViewSpec],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """:func:`augment_views` for views cropped at decode: ``crops[i]`` is view i's (B, 3, S_i, S_i) uint8."""
    if len(crops) != len(views):
        raise ValueError(f"{len(crops)} decoded crops for {len(views)} views")
    return [augment_cropped(c, v, generator, mean=mean, std=std) for c, v in zip(crops, views)]


def eval_transform(
    images_uint8: Tensor,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Deterministic evaluation preprocessing: resize the whole image, then normalise.

    Bilinear (align_corners=False), antialiased when shrinking; no resize when the
    images already are ``size`` x ``size``.

    Args:
        images_uint8: (B, 3, H, W) uint8 (or float in [0, 1]).
        size: output side S in pixels.

    Returns:
        (B, 3, S, S) float32, normalised, ``torch.channels_last``.
    """
    return normalize(resize(as_float_image(images_uint8), size), mean, std).contiguous(memory_format=torch.channels_last)


def resize(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) float -> (B, C, size, size): bilinear, antialiased when shrinking; as is at that size."""
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x
    shrink = size < height or size < width
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


_RECIPES: dict[str, Callable[[int], list[ViewSpec]]] = {}


def register_recipe(name: str):
    """Decorator: register ``fn(image_size) -> list[ViewSpec]`` as the augmentation recipe ``name``."""

    def wrap(fn: Callable[[int], list[ViewSpec]]) -> Callable[[int], list[ViewSpec]]:
        if name in _RECIPES:
            raise ValueError(f"augmentation recipe '{name}' is registered twice")
        _RECIPES[name] = fn
        return fn

    return wrap


@register_recipe("moco_v2")
def _moco_v2(image_size: int) -> list[ViewSpec]:
    """MoCo v2 (arXiv 2003.04297): two identically distributed views."""
    view = ViewSpec(image_size, scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), gray_p=0.2, blur_p=0.5)
    return [view, view]


@register_recipe("simclr")
def _simclr(image_size: int) -> list[ViewSpec]:
    """SimCLR (arXiv 2002.05709): colour strength 1.0, i.e. jitter (0.8, 0.8, 0.8, 0.2)."""
    view = ViewSpec(image_size, scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), gray_p=0.2, blur_p=0.5)
    return [view, view]


@register_recipe("byol")
def _byol(image_size: int) -> list[ViewSpec]:
    """BYOL (arXiv 2006.07733, table 6): asymmetric blur and solarize between the two views."""
    view = ViewSpec(image_size, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), gray_p=0.2)
    return [replace(view, blur_p=1.0, solarize_p=0.0), replace(view, blur_p=0.1, solarize_p=0.2)]


def list_recipes() -> list[str]:
    """Names accepted by :func:`get_recipe`, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str, image_size: int) -> list[ViewSpec]:
    """The views of a named recipe at ``image_size`` px; blur is off below 64 px (see module doc).

    Raises:
        ConfigError: unknown ``name``; the message lists the valid names.
    """
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, _RECIPES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown augmentation recipe '{name}'; valid recipes: {', '.join(list_recipes())}.{hint}")
    views = _RECIPES[name](image_size)
    if image_size < SMALL_IMAGE_SIDE:
        views = [replace(view, blur_p=0.0) for view in views]
    return views
