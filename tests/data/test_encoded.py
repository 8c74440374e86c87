"""The encoded store: bytes kept or re-encoded as stated, WebDataset layout, index, skips, reuse; crop decoding."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vipr.data.decode import CropDecoder, _dct_reduction, decode_crops, draw_boxes
from vipr.data.encoded import index_webdataset
from vipr.data.encoded_source import open_encoded_folder
from vipr.errors import DataError


def _photo(seed: int, size=(96, 72)) -> Image.Image:
    """A smooth random image (JPEG-friendly), width x height = size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for split, n in (("train", 3), ("test", 1)):
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                image = _photo(100 * label + 10 * i + len(split))
                suffix = "png" if i == 1 else "jpg"
                image.save(root / split / cls / f"{i}.{suffix}", quality=85)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    whole = io.BytesIO()
    _photo(99).save(whole, format="JPEG")
    (root / "train" / "dog" / "truncated.jpg").write_bytes(whole.getvalue()[:len(whole.getvalue()) // 2])
    return root


def test_jpeg_kept_byte_for_byte_png_reencoded_broken_skipped(folder, tmp_path):
    ds = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    assert ds.classes == ["cat", "dog"] and len(ds.train) == 6 and len(ds.test) == 2
    assert [p for p, _ in ds.skipped] == ["train/dog/broken.jpg", "train/dog/truncated.jpg"]  # now, not mid-epoch
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    jpeg = (folder / "train" / "cat" / "0.jpg").read_bytes()
    assert ds.train.blob(0) == jpeg  # kept as is
    png = ds.train.blob(1)
    assert png.startswith(b"\xff\xd8\xff")  # re-encoded as JPEG
    original = np.asarray(Image.open(folder / "train" / "cat" / "1.png").convert("RGB"), dtype=float)
    assert np.abs(np.asarray(Image.open(io.BytesIO(png)), dtype=float) - original).mean() < 3  # quality 90
    assert ds.train.sizes(0) == (72, 96)


def test_shards_are_webdataset_tars_and_reindex_the_same(folder, tmp_path):
    ds = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False, shard_bytes=4096)
    assert len(ds.train.shards) > 1  # small shards: the writer rolls over
    with tarfile.open(ds.train.shards[0]) as tar:
        names = tar.getnames()
        assert names[:2] == ["000000000.jpg", "000000000.cls"]
        assert tar.extractfile("000000000.cls").read() == b"0"
    again = index_webdataset(ds.train.shards)
    for key in ("label", "height", "width", "size"):
        np.testing.assert_array_equal(again.index[key], ds.train.index[key])
    assert [again.blob(i) for i in range(len(again))] == [ds.train.blob(i) for i in range(len(ds.train))]


def test_unchanged_folder_reuses_entry_changed_one_builds_new(folder, tmp_path):
    first = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    stamp = (first.store_dir / "meta.json").stat().st_mtime_ns
    second = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    assert second.store_dir == first.store_dir and (second.store_dir / "meta.json").stat().st_mtime_ns == stamp
    _photo(7).save(folder / "train" / "cat" / "new.jpg")
    third = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    assert third.store_dir != first.store_dir and len(third.train) == 7 and third.digest != first.digest


def test_not_a_folder_and_damaged_entry_fail_with_one_line(folder, tmp_path):
    with pytest.raises(DataError, match="takes an image folder"):
        open_encoded_folder(str(tmp_path / "missing"), cache_dir=tmp_path / "cache")
    ds = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    (ds.store_dir / "train_index.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="is damaged.*delete that folder"):
        open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False)


def test_crop_equals_pil_crop_and_resize_of_the_full_image(tmp_path):
    image = _photo(3, size=(120, 80))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # not JPEG: decoded at full scale, so exact
    boxes = np.array([[10, 20, 40, 60], [0, 0, 80, 120]])
    crops = decode_crops(buffer.getvalue(), boxes, [16, 16])
    for crop, (top, left, h, w) in zip(crops, boxes):
        expected = image.resize((16, 16), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        np.testing.assert_array_equal(crop.transpose(1, 2, 0), np.asarray(expected))


def test_jpeg_decoded_at_reduced_scale_only_when_every_box_allows():
    assert _dct_reduction(np.array([[0, 0, 200, 300]]), [32]) == 4  # 200 // 4 = 50 >= 32, 200 // 8 = 25 < 32
    assert _dct_reduction(np.array([[0, 0, 200, 300], [0, 0, 40, 40]]), [32, 32]) == 1  # the small box rules
    assert _dct_reduction(np.array([[0, 0, 200, 300], [0, 0, 40, 40]]), [32, 8]) == 4  # a small box, a small side
    assert _dct_reduction(np.array([[0, 0, 256, 256]]), [32]) == 8


def test_reduced_jpeg_decode_stays_close_to_the_full_decode():
    image = _photo(5, size=(256, 192))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    boxes = np.array([[0, 0, 192, 256], [30, 40, 128, 128]])  # reduction 4 for a 32-px side
    crops = [c.astype(float) for c in decode_crops(buffer.getvalue(), boxes, [32, 32])]
    full = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    for crop, (top, left, h, w) in zip(crops, boxes):
        expected = full.resize((32, 32), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        assert np.abs(crop.transpose(1, 2, 0) - np.asarray(expected, dtype=float)).mean() < 4


def test_boxes_follow_the_generator_and_decoder_batches_views():
    heights, widths = [72, 80], [96, 120]
    a = draw_boxes(heights, widths, [(0.2, 1.0), (0.5, 1.0)], (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    b = draw_boxes(heights, widths, [(0.2, 1.0), (0.5, 1.0)], (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    assert (a[..., 0] + a[..., 2] <= np.array(heights)[:, None]).all()
    assert (a[..., 1] + a[..., 3] <= np.array(widths)[:, None]).all()
    blobs = []
    for seed, (h, w) in enumerate(zip(heights, widths)):
        buffer = io.BytesIO()
        _photo(seed, size=(w, h)).save(buffer, format="JPEG")
        blobs.append(buffer.getvalue())
    decoder = CropDecoder(sides=[24, 16], threads=2)
    try:
        views = decoder(blobs, a)
        centers = decoder.centers(blobs, heights, widths)
    finally:
        decoder.close()
    assert [tuple(v.shape) for v in views] == [(2, 3, 24, 24), (2, 3, 16, 16)] and views[0].dtype == torch.uint8
    np.testing.assert_array_equal(views[1][0].numpy(), decode_crops(blobs[0], a[0], [24, 16])[1])
    full = Image.open(io.BytesIO(blobs[1])).convert("RGB")  # 120 x 80: the centred 80 x 80 square
    expected = full.resize((24, 24), Image.Resampling.BILINEAR, box=(20, 0, 100, 80))
    assert np.abs(centers[1].transpose(1, 2, 0).astype(float) - np.asarray(expected, dtype=float)).mean() < 4


def test_encoded_loader_cuts_each_views_crop_and_resumes_mid_epoch(folder, tmp_path):
    from vipr.data.augment import get_recipe
    from vipr.data.encoded_loader import EncodedBatchIterator
    from vipr.data.encoded_source import as_dataset

    ds = as_dataset(open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False), side=24, threads=1)
    assert ds.train.images.shape == (6, 3, 24, 24) and ds.train.images[[2, 0]].shape == (2, 3, 24, 24)
    specs = get_recipe("moco_v2", 16)
    loader = EncodedBatchIterator(ds.train, 2, specs=specs, threads=2, seed=3)
    loader.set_epoch(1)
    full = list(loader)
    assert len(full) == 3 and all(len(b.crops) == 2 and b.crops[1].shape == (2, 3, 16, 16) for b in full)
    assert sorted(int(i) for b in full for i in b.indices) == list(range(6))
    assert all((b.labels.numpy() == ds.train.labels[b.indices.numpy()]).all() for b in full)
    loader.set_epoch(1, start_step=2)  # a resumed epoch cuts the same crops of the same images
    resumed = list(loader)
    assert len(resumed) == 1 and all(torch.equal(a, b) for a, b in zip(resumed[0].crops, full[2].crops))
    assert not torch.equal(full[0].crops[0], full[0].crops[1])  # two views, two crops


def test_views_from_crops_flip_and_colour_but_do_not_crop():
    from vipr.data.augment import ViewSpec, augment_crops

    crops = [torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)]
    plain = ViewSpec(size=8, flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    out = augment_crops(crops, [plain], mean=(0, 0, 0), std=(1, 1, 1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[0], crops[0].float() / 255)  # nothing drawn: the decoded crop itself
    flipped = augment_crops(crops, [ViewSpec(size=8, flip_p=1.0, jitter_p=0.0, gray_p=0.0)], mean=(0, 0, 0),
                            std=(1, 1, 1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flipped[0], crops[0].flip(-1).float() / 255)
    with pytest.raises(ValueError, match="must be 16 px square"):
        augment_crops(crops, [ViewSpec(size=16)], generator=torch.Generator())


def test_buffer_shuffle_is_a_permutation_local_to_its_buffer():
    from vipr.data.encoded_loader import buffer_shuffle

    stream = np.arange(1000)
    out = buffer_shuffle(stream, 10, np.random.default_rng(0))
    assert sorted(out.tolist()) == stream.tolist()
    # an item leaves at most... it enters at position p and is emitted at or after p - size: never early
    position = np.empty(1000, int)
    position[out] = np.arange(1000)
    assert (position >= stream - 10).all() and not (out == stream).all()
    np.testing.assert_array_equal(out, buffer_shuffle(stream, 10, np.random.default_rng(0)))


def test_streaming_reads_shards_whole_splits_them_over_ranks_and_resumes(folder, tmp_path):
    from vipr.data.augment import get_recipe
    from vipr.data.encoded_loader import StreamingBatchIterator
    from vipr.data.encoded_source import as_dataset

    encoded = open_encoded_folder(str(folder), cache_dir=tmp_path / "cache", progress=False, shard_bytes=4096)
    ds = as_dataset(encoded, side=24, threads=1)
    shard_of = encoded.train.index["shard"]
    assert len(set(shard_of)) >= 2
    specs = get_recipe("moco_v2", 16)
    ranks = [StreamingBatchIterator(ds.train, 1, specs=specs, threads=1, seed=5, buffer=2, rank=r, world_size=2)
             for r in range(2)]
    for loader in ranks:
        loader.set_epoch(3)
    orders = [loader.shard() for loader in ranks]
    assert len(orders[0]) == len(orders[1]) == ranks[0].steps  # equal steps on every rank
    assert not set(shard_of[orders[0]]) & set(shard_of[orders[1]])  # no shard read by two ranks
    full = list(ranks[0])
    ranks[0].set_epoch(3, start_step=1)
    resumed = list(ranks[0])
    assert [int(b.indices[0]) for b in resumed] == [int(b.indices[0]) for b in full[1:]]
    assert all(torch.equal(a.crops[0], b.crops[0]) for a, b in zip(resumed, full[1:]))


def test_device_decoder_matches_the_thread_decoder():
    from vipr.data.decode import DeviceCropDecoder

    blobs, heights, widths = [], [72, 90], [96, 120]
    for seed, (h, w) in enumerate(zip(heights, widths)):
        buffer = io.BytesIO()
        _photo(seed, size=(w, h)).save(buffer, format="JPEG" if seed == 0 else "PNG")  # a PNG: the CPU fallback
        blobs.append(buffer.getvalue())
    boxes = draw_boxes(heights, widths, [(0.3, 1.0), (0.3, 1.0)], (3 / 4, 4 / 3), torch.Generator().manual_seed(2))
    on_device = DeviceCropDecoder([24, 16], "cpu")(blobs, boxes)
    threads = CropDecoder([24, 16], 1)
    try:
        reference = threads(blobs, boxes)
    finally:
        threads.close()
    for a, b in zip(on_device, reference):
        assert a.shape == b.shape and a.dtype == torch.uint8
        assert (a.float() - b.float()).abs().mean() < 3  # torch's and PIL's antialiased bilinear differ slightly
