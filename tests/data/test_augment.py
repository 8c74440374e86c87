"""Batched augmentations against independent computations: formulas written here and torchvision per image."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from vipr.data import augment_color as C
from vipr.data import augment_ops as A
from vipr.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViewSpec,
    augment_views,
    color_jitter,
    eval_transform,
    gaussian_blur,
    get_recipe,
    list_recipes,
    random_grayscale,
    random_resized_crop,
    solarize,
)
from vipr.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# torchvision's luma uses 0.2989 for red where ITU-R 601-2 (PIL, kornia, vipr) uses 0.299: contrast and
# saturation then differ by |1 - f| * 1e-4 * R <= 1e-4 for factors f in [0, 2]; twice that covers float32 rounding.
LUMA_TOLERANCE = 2e-4
# Both hue paths are float32 HSV round trips of values in [0, 1] by different arithmetic: a few ulps (~1e-7 each).
HUE_TOLERANCE = 1e-5


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int = 4, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=gen(seed))


def floats(batch: int = 6, height: int = 17, width: int = 19, seed: int = 0) -> torch.Tensor:
    x = torch.rand(batch, 3, height, width, generator=gen(seed))
    x[0, :, :4] = 0.5  # grey pixels: zero chroma
    x[1, 0] = x[1, 1]  # red == green ties
    return x


def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which samples an op modified."""
    return (before != after).flatten(1).any(dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list_recipes())  # the registry's contract test: every recipe
@pytest.mark.parametrize(("store", "size"), [(32, 32), (80, 64)])
def test_recipe_views_shape_dtype_layout(name: str, store: int, size: int, device: str) -> None:
    batch = images(4, store).to(device)
    views = augment_views(batch, get_recipe(name, size), generator=gen())
    assert len(views) == 2
    for view in views:
        assert view.shape == (4, 3, size, size) and view.dtype == torch.float32
        assert view.device == batch.device
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(view).all()


def test_recipes_listed_and_unknown_name_is_a_config_error() -> None:
    assert {"byol", "moco_v2", "simclr"} <= set(list_recipes())
    with pytest.raises(ConfigError, match=", ".join(list_recipes())) as info:
        get_recipe("moco-v2", 32)
    assert "moco_v2" in str(info.value)


def test_a_registered_recipe_is_listed_and_built(monkeypatch) -> None:
    from vipr.data import augment

    monkeypatch.setattr(augment, "_RECIPES", dict(augment._RECIPES))  # the registration stays in this test
    augment.register_recipe("crop_only")(lambda size: [ViewSpec(size, scale=(0.5, 1.0))] * 2)
    assert "crop_only" in list_recipes()
    assert [v.scale for v in get_recipe("crop_only", 32)] == [(0.5, 1.0)] * 2
    with pytest.raises(ValueError, match="twice"):
        augment.register_recipe("crop_only")(lambda size: [])


def test_recipe_contents_and_small_image_rule() -> None:
    byol = get_recipe("byol", 224)
    assert [(v.blur_p, v.solarize_p) for v in byol] == [(1.0, 0.0), (0.1, 0.2)]
    assert get_recipe("moco_v2", 224)[0].scale == (0.2, 1.0) and get_recipe("moco_v2", 224)[0].blur_p == 0.5
    assert get_recipe("simclr", 224)[0].jitter == (0.8, 0.8, 0.8, 0.2)
    for name in list_recipes():
        small, large = get_recipe(name, 32), get_recipe(name, 224)
        assert all(v.blur_p == 0.0 for v in small)
        assert [v.scale for v in small] == [v.scale for v in large]


def test_view_spec_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="gray_p"):
        ViewSpec(32, gray_p=1.5)
    with pytest.raises(ConfigError, match="scale"):
        ViewSpec(32, scale=(0.0, 1.0))


def test_same_seed_same_views_other_seed_other_views() -> None:
    batch, views = images(), get_recipe("byol", 32)
    first = augment_views(batch, views, generator=gen(1))
    again = augment_views(batch, views, generator=gen(1))
    other = augment_views(batch, views, generator=gen(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.allclose(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_seed_same_views_on_cpu_and_cuda() -> None:
    batch, views = images(), get_recipe("moco_v2", 32)
    on_cpu = augment_views(batch, views, generator=gen(3))
    on_gpu = augment_views(batch.cuda(), views, generator=gen(3))
    for a, b in zip(on_cpu, on_gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


def test_identical_images_get_different_views() -> None:
    batch = images(1).expand(8, -1, -1, -1).contiguous()
    view = augment_views(batch, get_recipe("simclr", 32), generator=gen())[0]
    flat = view.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(8) > 1e-3).all()  # every pair of samples differs


def test_input_batch_is_not_modified() -> None:
    x = floats(4, 40, 40)
    before = x.clone()
    augment_views(x, get_recipe("byol", 64), generator=gen())
    assert torch.equal(x, before)


@pytest.mark.parametrize(("side", "size"), [(20, 32), (48, 32)])
def test_full_crop_equals_bilinear_resize(side: int, size: int) -> None:
    batch = images(3, side)
    out = random_resized_crop(batch, size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, generator=gen())
    expected = F.interpolate(batch.float() / 255, size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    flipped = random_resized_crop(batch, size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, generator=gen())
    torch.testing.assert_close(flipped, torch.flip(expected, dims=[-1]), atol=1e-5, rtol=0)


def test_box_crop_equals_slice_then_resize() -> None:
    x = floats(2, 30, 40)
    boxes = torch.tensor([[3, 5, 12, 20], [0, 0, 30, 17]])  # sample 0 is upscaled along H, sample 1 shrunk
    out = A.resized_crop(x, boxes, 16, torch.tensor([False, True]))
    expected = [TF.resize(x[i, :, t : t + h, l : l + w], [16, 16], antialias=False) for i, (t, l, h, w) in
                enumerate(boxes.tolist())]
    torch.testing.assert_close(out[1], expected[1].flip(-1), atol=1e-5, rtol=0)
    # Upscaled, the first and last output rows sample within half a pixel outside the box: the full image
    # has real pixels there where crop-then-resize clamps to the box edge. Every other row matches.
    torch.testing.assert_close(out[0, :, 1:-1], expected[0][:, 1:-1], atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_distribution() -> None:
    n, height, width = 2000, 32, 48
    boxes = A.sample_crop_boxes(n, height, width, (0.08, 1.0), (3 / 4, 4 / 3), gen())
    top, left, h, w = boxes.T
    assert ((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width) & (h > 0) & (w > 0)).all()
    torch.manual_seed(0)
    reference = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(height, width), [0.08, 1.0], [3 / 4, 4 / 3])
                              for _ in range(n)], dtype=torch.float64)
    ours, theirs = (h * w).double() / (height * width), reference[:, 2] * reference[:, 3] / (height * width)
    # Area fraction ~ U(0.08, 1) truncated by the fit test: sd ~0.27, so 4 standard errors of the mean.
    assert abs(ours.mean() - theirs.mean()) < 4 * 0.27 * math.sqrt(2 / n)


def test_crop_fallback_is_the_centred_box() -> None:
    # A 10x100 image cannot hold a box of >= 90% area with aspect <= 4/3: every attempt fails.
    boxes = A.sample_crop_boxes(5, 10, 100, (0.9, 1.0), (3 / 4, 4 / 3), gen())
    w = round(10 * 4 / 3)
    assert boxes.tolist() == [[0, (100 - w) // 2, 10, w]] * 5


def test_grayscale_matches_luma_formula() -> None:
    x = floats()
    out = random_grayscale(x, p=1.0, generator=gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out, luma[:, None].expand_as(x), atol=1e-6, rtol=0)


def test_solarize_matches_formula() -> None:
    x = floats()
    out = solarize(x, threshold=0.3, p=1.0, generator=gen())
    assert torch.equal(out, torch.where(x >= 0.3, 1 - x, x))


def factor_table(column: int, values: list[float]) -> torch.Tensor:
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(len(values), 1)
    factors[:, column] = torch.tensor(values)
    return factors


def test_brightness_matches_formula() -> None:
    x, values = floats(), [0.0, 0.5, 0.9, 1.0, 1.3, 2.0]
    out = C.adjust_color(x, factor_table(0, values))
    expected = torch.stack([(x[i] * f).clamp(0, 1) for i, f in enumerate(values)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("column", "reference"), [(1, TF.adjust_contrast), (2, TF.adjust_saturation)])
def test_contrast_and_saturation_match_torchvision(column: int, reference) -> None:
    x, values = floats(), [0.0, 0.2, 0.6, 1.0, 1.4, 1.8]
    out = C.adjust_color(x, factor_table(column, values))
    expected = torch.stack([reference(x[i], f) for i, f in enumerate(values)])
    torch.testing.assert_close(out, expected, atol=LUMA_TOLERANCE, rtol=0)


def test_hue_matches_torchvision() -> None:
    x, values = floats(), [-0.5, -0.3, -0.05, 0.1, 0.25, 0.5]
    out = C.adjust_color(x, factor_table(3, values))
    expected = torch.stack([TF.adjust_hue(x[i], f) for i, f in enumerate(values)])
    torch.testing.assert_close(out, expected, atol=HUE_TOLERANCE, rtol=0)


def test_jitter_order_matches_torchvision_sequence() -> None:
    x, order = floats(), (3, 0, 2, 1)
    factors = C.sample_jitter_factors(6, (0.8, 0.8, 0.8, 0.2), 1.0, gen())[0]
    steps = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    expected = []
    for image, row in zip(x, factors.tolist(), strict=True):
        for step in order:
            image = steps[step](image, row[step])
        expected.append(image)
    out = C.adjust_color(x, factors, order)
    torch.testing.assert_close(out, torch.stack(expected), atol=4 * LUMA_TOLERANCE, rtol=0)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_blur_matches_torchvision(sigma: float) -> None:
    x = floats(3, 24, 28)
    out = gaussian_blur(x, sigma_range=(sigma, sigma), p=1.0, generator=gen(), kernel_size=7)
    expected = torch.stack([TF.gaussian_blur(image, [7, 7], [sigma, sigma]) for image in x])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_blur_sigma_per_sample() -> None:
    x = floats(3, 24, 28)
    sigma = torch.tensor([0.2, 0.9, 1.7])
    out = A.blur_with_sigma(x, sigma, 9)
    expected = torch.stack([TF.gaussian_blur(x[i], [9, 9], [s, s]) for i, s in enumerate(sigma.tolist())])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert A.blur_kernel_size(224) == 23 and A.blur_kernel_size(96) == 9 and A.blur_kernel_size(32) == 3


RANDOM_OPS = {
    "jitter": lambda x, p, g: color_jitter(x, 0.4, 0.4, 0.4, 0.1, p, g),
    "grayscale": lambda x, p, g: random_grayscale(x, p, g),
    "blur": lambda x, p, g: gaussian_blur(x, (0.5, 2.0), p, g),
    "solarize": lambda x, p, g: solarize(x, 0.5, p, g),
    "flip": lambda x, p, g: random_resized_crop(x, 8, (1.0, 1.0), (1.0, 1.0), p, g),
}


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_probability_zero_is_identity(name: str) -> None:
    x = torch.rand(16, 3, 8, 8, generator=gen())
    assert torch.equal(RANDOM_OPS[name](x, 0.0, gen()), x)


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_probability_half_applies_to_half(name: str) -> None:
    n, p = 2000, 0.5
    x = torch.rand(n, 3, 8, 8, generator=gen())
    fraction = changed(x, RANDOM_OPS[name](x, p, gen())).double().mean().item()
    assert abs(fraction - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial standard errors


def test_eval_transform_resize_and_normalise() -> None:
    batch = images(2, 40)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    same = eval_transform(batch, 40)
    torch.testing.assert_close(same, (batch.float() / 255 - mean) / std, atol=1e-6, rtol=0)
    assert same.is_contiguous(memory_format=torch.channels_last)
    shrunk = eval_transform(batch, 24)
    expected = TF.resize(batch.float() / 255, [24, 24], antialias=True)
    torch.testing.assert_close(shrunk, (expected - mean) / std, atol=1e-5, rtol=0)
