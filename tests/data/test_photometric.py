"""Photometric ops drawn for the whole batch and applied in chunks: the same views as the single ops, any chunking."""

from __future__ import annotations

import pytest
import torch

from vipr.data import photometric
from vipr.data.augment import ViewSpec, augment_crops, augment_views, get_recipe, normalize
from vipr.data.augment_color import color_jitter
from vipr.data.augment_ops import coin_flips, gaussian_blur, random_grayscale, solarize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VIEW = ViewSpec(24, jitter_p=0.8, gray_p=0.3, blur_p=0.5, solarize_p=0.3)  # every op on some samples


def single_ops(crops: torch.Tensor, view: ViewSpec, seed: int) -> torch.Tensor:
    """An independent computation: flip, then the four public ops one after another on the whole batch."""
    g = torch.Generator().manual_seed(seed)
    x = crops.float() / 255
    flip = coin_flips(len(x), view.flip_p, g)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = color_jitter(x, *view.jitter, p=view.jitter_p, generator=g)
    x = random_grayscale(x, view.gray_p, g)
    x = gaussian_blur(x, view.blur_sigma, view.blur_p, g)
    x = solarize(x, view.solarize_threshold, view.solarize_p, g)
    return normalize(x, MEAN, STD)


@pytest.mark.parametrize("chunk_images", [1, 3, 7, 64])  # one image a chunk .. the whole batch in one
def test_chunked_views_equal_the_single_ops(monkeypatch, chunk_images: int) -> None:
    monkeypatch.setattr(photometric, "CHUNK_BYTES", chunk_images * 3 * 24 * 24 * 4)
    crops = torch.randint(0, 256, (17, 3, 24, 24), dtype=torch.uint8)
    got = augment_crops([crops], [VIEW], mean=MEAN, std=STD, generator=torch.Generator().manual_seed(5))[0]
    expected = single_ops(crops, VIEW, seed=5)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_chunk_rows_cover_the_batch_once_and_stay_whole_off_the_cpu() -> None:
    parts = photometric.chunks(100, 224, torch.device("cpu"))
    rows = [r for part in parts for r in range(100)[part]]
    assert rows == list(range(100)) and len(parts) > 1  # a 224-px batch of 100 is split
    assert photometric.chunks(100, 32, torch.device("cpu")) == [slice(0, 100)]  # 32 px: one chunk fits
    assert photometric.chunks(100, 224, torch.device("meta")) == [slice(0, 100)]


def test_raw_store_views_do_not_depend_on_the_chunking(monkeypatch) -> None:
    images = torch.randint(0, 256, (9, 3, 40, 40), dtype=torch.uint8)
    specs = get_recipe("moco_v2", 32)
    whole = augment_views(images, specs, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(photometric, "CHUNK_BYTES", 2 * 3 * 32 * 32 * 4)
    chunked = augment_views(images, specs, generator=torch.Generator().manual_seed(1))
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
