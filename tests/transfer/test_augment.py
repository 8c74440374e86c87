"""vipr.transfer.augment: determinism, geometry of boxes / masks / maps, dropping, normalisation, sides."""

import pytest
import torch

from vipr.errors import ConfigError
from vipr.transfer.augment import (
    DenseAugment,
    augment_detection,
    augment_segmentation,
    eval_view,
    flip_boxes,
    output_side,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def rectangles_batch(canvas: int = 96, batch: int = 6, seed: int = 0):
    """Black canvases with bright filled rectangles; boxes and masks are those rectangles (integer edges)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(batch, 3, canvas, canvas, dtype=torch.uint8)
    targets = []
    for i in range(batch):
        x1, y1 = (int(v) for v in torch.randint(0, canvas // 2, (2,), generator=g))
        w, h = (int(v) for v in torch.randint(8, canvas // 2, (2,), generator=g))
        images[i, :, y1:y1 + h, x1:x1 + w] = 255
        mask = torch.zeros(1, canvas, canvas, dtype=torch.uint8)
        mask[0, y1:y1 + h, x1:x1 + w] = 1
        box = torch.tensor([[x1, y1, x1 + w, y1 + h]], dtype=torch.float32)
        targets.append({"boxes": box, "labels": torch.tensor([i % 3 + 1]), "masks": mask})
    return images, targets


def tight_box(mask: torch.Tensor) -> torch.Tensor:
    """xyxy (exclusive right / bottom edges) of the True pixels of an (H, W) mask."""
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_same_seed_same_output_other_seed_differs():
    images, targets = rectangles_batch()
    aug = DenseAugment(scales=(0.5, 1.0, 1.5))
    runs = [augment_detection(images, targets, aug, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    (xa, ta), (xb, tb), (xc, tc) = runs
    assert torch.equal(xa, xb) and all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(ta, tb, strict=True))
    different = xa.shape != xc.shape or not torch.equal(xa, xc)
    assert different or any(not torch.equal(a["boxes"], c["boxes"]) for a, c in zip(ta, tc, strict=True))


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_box_moves_with_bright_pixels_and_mask(scale):
    images, targets = rectangles_batch()
    aug = DenseAugment(scales=(scale,), mean=MEAN, std=STD)
    x, out = augment_detection(images, targets, aug, torch.Generator().manual_seed(1))
    raw = x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)  # back to [0, 1]
    side = output_side(96, scale)
    flipped = 0
    for i, t in enumerate(out):
        box = t["boxes"][0]
        assert torch.allclose(tight_box(raw[i].mean(0) > 0.5), box, atol=1.0), (i, box)  # image, independent of boxes
        assert torch.allclose(tight_box(t["masks"][0].bool()), box, atol=1.0), (i, box)
        mirrored = flip_boxes(targets[i]["boxes"] * side / 96, side)[0]
        flipped += bool(torch.allclose(box, mirrored)) and not torch.allclose(box, targets[i]["boxes"][0] * side / 96)
    assert 0 < flipped < len(out)  # p = 0.5 over 6 images: both flipped and kept images are checked


def test_flip_twice_is_identity():
    boxes = torch.tensor([[0.0, 1.0, 10.5, 7.0], [3.25, 0.0, 64.0, 64.0]])
    assert torch.equal(flip_boxes(flip_boxes(boxes, 64), 64), boxes)
    images, targets = rectangles_batch(canvas=64)
    always = DenseAugment(scales=(1.0,), hflip=1.0)
    _, once = augment_detection(images, targets, always)
    _, twice = augment_detection(images, once, always)
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(targets, twice, strict=True))
    assert all(torch.equal(a["masks"], b["masks"]) for a, b in zip(targets, twice, strict=True))


def test_nearest_resize_keeps_only_mask_and_class_values():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=g)
    maps = torch.randint(0, 5, (4, 64, 64), dtype=torch.uint8, generator=g)
    maps[:, 40:] = 255
    masks = torch.randint(0, 2, (4, 64, 64), dtype=torch.uint8, generator=g)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]]), "labels": torch.tensor([1]), "masks": masks[i:i + 1]}
               for i in range(4)]
    for scale in (0.5, 1.5):
        aug = DenseAugment(scales=(scale,))
        x, out_maps = augment_segmentation(images, maps, aug, torch.Generator().manual_seed(0))
        assert out_maps.dtype == torch.int64 and out_maps.shape == (4, x.shape[-1], x.shape[-1])
        assert set(out_maps.unique().tolist()) <= {0, 1, 2, 3, 4, 255} and (out_maps == 255).any()
        _, out = augment_detection(images, targets, aug, torch.Generator().manual_seed(0))
        assert set(torch.cat([t["masks"] for t in out]).unique().tolist()) == {0, 1}


def test_segmentation_flip_matches_detection_geometry():
    images, targets = rectangles_batch(canvas=64)
    maps = torch.stack([t["masks"][0] * 7 for t in targets])  # class 7 inside each rectangle
    aug = DenseAugment(scales=(0.5, 1.5))
    _, out = augment_detection(images, targets, aug, torch.Generator().manual_seed(5))
    _, out_maps = augment_segmentation(images, maps, aug, torch.Generator().manual_seed(5))
    assert all(torch.equal(out_maps[i] == 7, t["masks"][0].bool()) for i, t in enumerate(out))


def test_box_under_one_pixel_dropped_with_mask_and_label():
    images = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    masks = torch.zeros(3, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 10:30] = 1
    masks[1, 5:40, 20:22] = 1  # 1.5 px wide: 0.75 px at scale 0.5
    masks[2, 40:60, 40:50] = 1
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [20.0, 5.0, 21.5, 40.0], [40.0, 40.0, 50.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": masks}
    _, (out,) = augment_detection(images, [target], DenseAugment(scales=(0.5,), hflip=0.0))
    assert out["labels"].tolist() == [1, 3]
    assert torch.equal(out["boxes"], boxes[[0, 2]] * 0.5)
    assert out["masks"].shape == (2, 32, 32) and torch.equal(out["masks"][1], masks[2, 1::2, 1::2])


def test_normalisation_and_eval_view():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(eval_view(images, MEAN, STD), expected, atol=1e-5)
    aug = DenseAugment(scales=(1.0,), hflip=0.0, mean=MEAN, std=STD)
    x, _ = augment_segmentation(images, torch.zeros(2, 32, 32, dtype=torch.uint8), aug)
    assert x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-5)


def test_output_sides_are_multiples_of_the_divisor():
    aug = DenseAugment(scales=(0.3, 0.75, 0.9, 1.0, 1.1, 1.33, 2.0))
    for canvas in (100, 128, 200):
        assert all(side % 32 == 0 and side >= 32 for side in aug.sides(canvas)), aug.sides(canvas)
    assert DenseAugment(scales=(0.75, 1.0, 1.25)).sides(128) == (96, 128, 160)
    assert DenseAugment(scales=(1.0,), size_divisor=8).sides(100) == (104,)
    images, targets = rectangles_batch(canvas=100, batch=2)
    for seed in range(4):
        x, _ = augment_detection(images, targets, aug, torch.Generator().manual_seed(seed))
        assert x.shape[-1] % 32 == 0 and x.shape[-1] == x.shape[-2]


def test_bad_settings_and_inputs_raise():
    with pytest.raises(ConfigError, match="scales"):
        DenseAugment(scales=())
    with pytest.raises(ConfigError, match="hflip"):
        DenseAugment(scales=(1.0,), hflip=1.5)
    images, targets = rectangles_batch(canvas=64, batch=2)
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        augment_detection(images, targets[:1], DenseAugment(scales=(1.0,)))
    with pytest.raises(ValueError, match="keys"):
        augment_detection(images, [{**t, "area": t["labels"]} for t in targets], DenseAugment(scales=(1.0,)))


@pytest.mark.parametrize("scale", [0.75, 1.25])
def test_matches_torchvision_v2_resize_then_flip(scale):
    """An independent reference: torchvision.transforms.v2.functional on each image (flip on, one scale)."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    images, targets = rectangles_batch(canvas=128, batch=2)
    aug = DenseAugment(scales=(scale,), hflip=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, out = augment_detection(images, targets, aug)
    side = output_side(128, scale)
    for i, t in enumerate(targets):
        boxes = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(128, 128))
        ref_boxes = TF.horizontal_flip(TF.resize(boxes, [side, side]))
        ref_mask = TF.horizontal_flip(TF.resize_mask(t["masks"], [side, side], InterpolationMode.NEAREST_EXACT))
        ref_image = TF.horizontal_flip(TF.resize(images[i].float() / 255, [side, side], antialias=True))
        assert torch.allclose(out[i]["boxes"], ref_boxes, atol=1e-4)
        assert torch.equal(out[i]["masks"], ref_mask)
        assert torch.allclose(x[i], ref_image, atol=1e-5)
