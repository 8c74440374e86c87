"""Training augmentation of detection and segmentation batches, run on the training device.

Dense data lies on S x S uint8 canvases (vipr.data.dense.types); a training batch arrives as
one (B, 3, S, S) tensor, already on the device, with its torchvision targets. Each batch gets
one output side S' drawn from ``DenseAugment.scales`` (multi-scale training) and a horizontal
flip per image, and leaves as one float32 (B, 3, S', S') tensor normalised with mean / std.
Random parameters come from one CPU ``torch.Generator`` (the engine checkpoints it, so a
resumed run draws the same scales and flips), as in vipr.data.augment.

One scale per batch, not per image. detectron2's ``ResizeShortestEdge(sample_style="choice")``
and torchvision's detection presets draw a size per image in the DataLoader workers and pad
the batch to its largest image afterwards (``ImageList.from_tensors``, ``size_divisible``).
vipr keeps whole-batch tensors on the device (DESIGN.md, principle 1): one side per batch
keeps the batch one tensor with no padding, resized by a single ``F.interpolate`` call. Every
image still sees every scale equally often over an epoch; only the mix within one step differs.

Output sides are multiples of ``size_divisor`` (32 by default): an FPN halves the feature map
up to stride 32 (P5), and a side that is not a multiple of the largest stride leaves levels
misaligned by a fraction of a cell (torchvision pads to 32 internally for the same reason).

The whole canvas is resized, padding included, so the valid region shrinks or grows with the
image and the padding stays zero (it becomes -mean / std after normalisation). A flip mirrors
the whole canvas: an image padded on the right ends up on the right with its padding on the
left. That is fine -- boxes and masks move with it -- but a flipped image no longer starts at
column 0.

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    >>> targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    >>> x, out = augment_detection(images, targets, DenseAugment(scales=(0.5,)), g)
    >>> tuple(x.shape), out[0]["boxes"].shape
    ((2, 3, 32, 32), torch.Size([1, 4]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD, resize
from vipr.data.augment_ops import as_float_image, coin_flips, normalize, resized_crop
from vipr.errors import ConfigError

__all__ = ["DenseAugment", "augment_detection", "augment_segmentation", "draw_geometry", "eval_view",
           "flip_boxes", "output_side"]

TARGET_KEYS = ("boxes", "labels", "masks")  # what DenseSplit.batch gives; anything else is an error
MIN_BOX_SIDE = 1.0  # px at the output scale; thinner boxes are dropped (torchvision's losses need w, h > 0)


@dataclass(frozen=True)
class DenseAugment:
    """Multi-scale resize and horizontal flip of dense batches, then normalisation."""

    scales: tuple[float, ...]  # output side / canvas side, one drawn per batch (e.g. (0.75, 1.0, 1.25))
    hflip: float = 0.5  # probability of a left-right flip, per image
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, on the [0, 1] scale
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisor: int = 32  # px: output sides are multiples of it (the FPN's largest stride)

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"DenseAugment.scales must be positive factors, e.g. (0.75, 1.0, 1.25), "
                              f"got {self.scales}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError(f"DenseAugment.hflip is a probability in [0, 1], got {self.hflip}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"DenseAugment.mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
        if not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            raise ConfigError(f"DenseAugment.size_divisor must be a positive integer, got {self.size_divisor!r}")

    def sides(self, canvas: int) -> tuple[int, ...]:
        """The output side of each scale for an S = ``canvas`` px store, in pixels."""
        return tuple(output_side(canvas, s, self.size_divisor) for s in self.scales)


def output_side(canvas: int, scale: float, divisor: int = 32) -> int:
    """canvas * scale to the nearest multiple of ``divisor`` (halves up), at least ``divisor``, in pixels."""
    return max(divisor, divisor * int(canvas * scale / divisor + 0.5))  # not round(): it sends 12.5 to 12


def draw_geometry(aug: DenseAugment, canvas: int, batch: int, generator: torch.Generator | None) -> tuple[int, Tensor]:
    """Draw one batch's output side and flips: (S' in px, (B,) bool on the CPU).

    The scale index is drawn first, then the B flips, so detection and segmentation batches
    of the same generator state get the same geometry.
    """
    index = int(torch.randint(len(aug.scales), (1,), generator=generator))
    return aug.sides(canvas)[index], coin_flips(batch, aug.hflip, generator)


def flip_boxes(boxes: Tensor, width: float) -> Tensor:
    """Mirror (N, 4) xyxy boxes left-right in a ``width`` px image: x1' = W - x2, x2' = W - x1."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def _flip_rows(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror the last axis of the rows of ``x`` where ``flip`` (len(x),) bool is True; ``x`` is not written."""
    index = flip.nonzero().squeeze(1).to(x.device)
    if index.numel() == 0:
        return x
    return x.index_copy(0, index, x.index_select(0, index).flip(-1))


def _resize_nearest(x: Tensor, side: int) -> Tensor:
    """(N, H, W) integer maps -> (N, side, side), nearest; as is at that size.

    ``nearest-exact`` samples at pixel centres (src = floor((dst + 0.5) * H / side)), the same
    continuous geometry as the boxes' x * side / H; plain ``nearest`` shifts by up to half a pixel.
    """
    if x.shape[-2:] == (side, side):
        return x
    return F.interpolate(x.unsqueeze(1), size=(side, side), mode="nearest-exact").squeeze(1)


def _image_view(images: Tensor, side: int, flip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, 3, S, S) -> normalised float32 (B, 3, side, side): bilinear resize, flips, mean / std.

    Enlarging goes through ``resized_crop`` with the whole canvas as the box: the same bilinear
    values as ``F.interpolate`` (within 1e-5) with the flip folded into the sampling grid, 2.3x
    faster than interpolate-then-flip for 8 x 128 -> 160 px on one CPU thread. Shrinking keeps
    ``resize``'s antialiasing, which grid_sample lacks.
    """
    x = as_float_image(images)
    if side > x.shape[-1]:
        whole = torch.tensor([[0, 0, x.shape[-2], x.shape[-1]]]).expand(x.shape[0], 4)  # top, left, h, w
        x = resized_crop(x, whole, side, flip)
    else:
        x = _flip_rows(resize(x, side), flip)  # antialiased when shrinking, as vipr.data.augment.resize
    return normalize(x, mean, std)


def _check_batch(images: Tensor, count: int, what: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square canvases (B, 3, S, S), got shape {tuple(images.shape)}")
    if count != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {count} {what}; give one per image")


def augment_detection(
    images: Tensor, targets: list[dict[str, Tensor]], aug: DenseAugment, generator: torch.Generator | None = None,
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Multi-scale resize and per-image flip of a detection / instance-segmentation batch.

    Boxes are scaled by S' / S and mirrored with their image; masks are resized with nearest
    (one call for all instances of the batch) and mirrored; a box narrower or lower than 1 px
    after scaling is dropped with its label and mask.

    Args:
        images: (B, 3, S, S) uint8 canvases, on any device.
        targets: B dicts: "boxes" (N, 4) float xyxy canvas px, "labels" (N,) int64, optional
            "masks" (N, S, S) uint8 -- ``DenseSplit.batch``'s targets; not written.
        aug: the scales, flip probability and normalisation.
        generator: CPU generator of the scale and flips.

    Returns:
        float32 (B, 3, S', S') normalised images, and B new target dicts of the same keys in
        output pixels: boxes (N', 4), labels (N',), masks (N', S', S') uint8.
    """
    _check_batch(images, len(targets), "targets")
    canvas = images.shape[-1]
    side, flip = draw_geometry(aug, canvas, images.shape[0], generator)
    return _image_view(images, side, flip, aug.mean, aug.std), _transform_targets(targets, canvas, side, flip)


def _check_targets(targets: list[dict[str, Tensor]]) -> bool:
    """Whether the targets carry masks; raises on unknown keys or masks on only some images."""
    for t in targets:
        if set(t) - set(TARGET_KEYS) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"a detection target holds boxes, labels and optionally masks; got keys {sorted(t)}")
    has_masks = [("masks" in t) for t in targets]
    if any(has_masks) and not all(has_masks):
        raise ValueError("masks are given for some images of the batch but not all; give them for every image")
    return bool(targets) and all(has_masks)


def _transform_targets(
    targets: list[dict[str, Tensor]], canvas: int, side: int, flip: Tensor,
) -> list[dict[str, Tensor]]:
    """Scale, mirror and filter each target (see ``augment_detection``); masks resized in one call."""
    counts = [len(t["boxes"]) for t in targets]
    masks = None
    if _check_targets(targets):
        per_instance_flip = flip.repeat_interleave(torch.tensor(counts, dtype=torch.long))  # (M,)
        masks = _flip_rows(_resize_nearest(torch.cat([t["masks"] for t in targets]), side), per_instance_flip)
        masks = masks.split(counts)  # B views (N_i, S', S')
    out = []
    for i, t in enumerate(targets):
        boxes = t["boxes"].to(torch.float32) * (side / canvas)  # continuous xyxy, so the factor is exact
        boxes = flip_boxes(boxes, side) if flip[i] else boxes
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        new = {"boxes": boxes[keep], "labels": t["labels"][keep]}
        if masks is not None:
            new["masks"] = masks[i][keep.to(masks[i].device)]
        out.append(new)
    return out


def augment_segmentation(
    images: Tensor, label_maps: Tensor, aug: DenseAugment, generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Multi-scale resize and per-image flip of a semantic-segmentation batch.

    The scale and flips are drawn as ``augment_detection`` draws them; label maps are resized
    with nearest, so they hold only the values they had (class ids and 255 = ignore).

    Args:
        images: (B, 3, S, S) uint8 canvases.
        label_maps: (B, S, S) uint8 (or any integer type) class index per pixel, 255 ignore.
        aug: the scales, flip probability and normalisation.
        generator: CPU generator of the scale and flips.

    Returns:
        float32 (B, 3, S', S') normalised images and int64 (B, S', S') label maps.
    """
    _check_batch(images, label_maps.shape[0], "label maps")
    canvas = images.shape[-1]
    if label_maps.shape[-2:] != (canvas, canvas) or label_maps.ndim != 3:
        raise ValueError(f"label maps must be (B, {canvas}, {canvas}) like the images, got {tuple(label_maps.shape)}")
    side, flip = draw_geometry(aug, canvas, images.shape[0], generator)
    maps = _flip_rows(_resize_nearest(label_maps, side), flip).to(torch.int64)  # resized before widening: 8x less
    return _image_view(images, side, flip, aug.mean, aug.std), maps


def eval_view(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Evaluation input: uint8 (B, 3, S, S) -> float32 (B, 3, S, S), (x / 255 - mean) / std, no resize.

    Boxes and masks of the canvas need no change, so evaluation scores the stored geometry.
    """
    return normalize(as_float_image(images), mean, std)
