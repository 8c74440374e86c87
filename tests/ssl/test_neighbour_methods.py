"""CLIM, CsMl/HSA, SCAN and SupCon parts: losses against explicit loops, CutMix boxes and area
weights, the neighbour table's schedule, draws and checkpoint state, and the selection rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from vipr.errors import ConfigError, DataError
from vipr.ssl.clim import auto_clusters
from vipr.ssl.losses import supcon_loss, weighted_info_nce
from vipr.ssl.mixing import box_masks, cutmix, cutmix_boxes, draw_beta
from vipr.ssl.neighbours import NeighbourTable
from vipr.ssl.scan import same_label


def _unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_weighted_info_nce_matches_the_formula():
    torch.manual_seed(0)
    q, ka, kb, queue, w, t = _unit(5, 8), _unit(5, 8), _unit(5, 8), _unit(7, 8), torch.rand(5, dtype=torch.float64), 0.2
    total = 0.0
    for i in range(5):
        negatives = sum(math.exp(float(q[i] @ n) / t) for n in queue)
        term = [-math.log(math.exp(float(q[i] @ k[i]) / t) / (math.exp(float(q[i] @ k[i]) / t) + negatives))
                for k in (ka, kb)]
        total += float(w[i]) * term[0] + (1 - float(w[i])) * term[1]
    assert float(weighted_info_nce(q, ka, kb, w, queue, t)) == pytest.approx(total / 5, rel=1e-9)


def test_supcon_matches_the_formula_with_unlabelled_rows():
    torch.manual_seed(1)
    m, t = 4, 0.1
    z = _unit(2 * m, 6)
    labels = torch.tensor([0, 1, 0, -1] * 2)  # images 0 and 2 share a label; image 3 is unlabelled
    total = 0.0
    for i in range(2 * m):
        positives = [p for p in range(2 * m) if p != i and (p % m == i % m or (labels[i] >= 0 and labels[p] == labels[i]))]
        denominator = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(2 * m) if a != i)
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denominator) for p in positives) / len(positives)
    assert float(supcon_loss(z, labels, t)) == pytest.approx(total / (2 * m), rel=1e-6)  # float32 inside


def test_cutmix_boxes_cover_one_minus_lambda_and_weights_count_pixels():
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0] * 40)
    boxes = cutmix_boxes(lam, 32, 32, g)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    unclipped = ((1 - lam).sqrt() * 32).round() ** 2
    assert (area <= unclipped).all() and (area[lam == 1] == 0).all() and (area[lam == 0] >= 256).all()  # a full box, centred anywhere, keeps a quarter
    base, patch = torch.zeros(len(lam), 3, 32, 32), torch.ones(len(lam), 3, 32, 32)
    mixed, base_share = cutmix(base, patch, boxes)
    from_base = (mixed[:, 0] == 0).float().mean(dim=(1, 2))  # pixel share of the base, counted
    torch.testing.assert_close(base_share, from_base)
    assert (base_share >= 1 - unclipped / 1024 - 1e-6).all()  # clipping only ever leaves more of the base


def test_box_masks_on_a_hand_made_box():
    mask = box_masks(torch.tensor([[1, 3, 0, 2]]), 4, 4)[0, 0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 0:2] = True
    assert torch.equal(mask, expected)


def test_draw_beta_is_reproducible_and_in_range():
    a, b = draw_beta(100, 0.2, torch.Generator().manual_seed(3)), draw_beta(100, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()
    assert ((a < 0.1) | (a > 0.9)).float().mean() > 0.5  # Beta(0.2, 0.2) puts most mass near 0 and 1


def test_table_refresh_schedule():
    table = NeighbourTable(k=2, refresh_every=5, start_epoch=10)
    assert [e for e in range(30) if table.due(e)] == list(range(10, 30))  # never refreshed: due from 10 on
    table.bank_epoch = 10
    assert [e for e in range(10, 30) if table.due(e)] == list(range(15, 30))
    table.bank_epoch = 15
    assert not table.due(19) and table.due(20)


def test_table_draws_only_candidates_and_falls_back_to_self():
    table = NeighbourTable(k=3, refresh_every=1)
    table.indices = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    table.candidates = torch.tensor([[False, True, False], [True, True, False], [False] * 3, [True] * 3])
    table.bank_epoch = 0
    g = torch.Generator().manual_seed(0)
    seen = {i: set() for i in range(4)}
    for _ in range(50):
        positives, found = table.draw(torch.arange(4), g)
        for i, (p, f) in enumerate(zip(positives.tolist(), found.tolist())):
            seen[i].add((p, f))
    assert seen == {0: {(2, True)}, 1: {(0, True), (2, True)}, 2: {(2, False)}, 3: {(0, True), (1, True), (2, True)}}


def test_table_state_round_trips_through_state_dict():
    table = NeighbourTable(k=2, refresh_every=1)
    table.indices, table.candidates, table.bank_epoch = torch.tensor([[1, 2]]), torch.tensor([[True, False]]), 7
    table.features = torch.randn(3, 4).half()
    other = NeighbourTable(k=2, refresh_every=1)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.indices, table.indices) and torch.equal(other.candidates, table.candidates)
    assert torch.equal(other.features, table.features)
    assert other.bank_epoch == 7 and not other.due(7)


def test_table_refresh_finds_true_neighbours():
    """Two tight groups of images: each image's neighbours are the rest of its group."""
    images = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    images[3:] = 255
    features = {0: [1.0, 0.0], 255: [0.0, 1.0]}

    def encoder(x):  # the normalised views keep the groups apart; add a tiny per-image offset
        base = torch.tensor([features[0] if float(v) < 0 else features[255] for v in x[:, 0, 0, 0]])
        return base + 0.01 * torch.arange(len(x))[:, None]

    table = NeighbourTable(k=2, refresh_every=1)
    stats = table.refresh(0, encoder, images.numpy(), torch.arange(6), image_size=4, device="cpu", progress=False)
    assert stats["bank_seconds"] >= 0 and stats["positive_rate"] == 1.0
    assert [set(r) for r in table.indices.tolist()] == [{1, 2}, {0, 2}, {0, 1}, {4, 5}, {3, 5}, {3, 4}]
    expected = torch.nn.functional.normalize(encoder(torch.tensor([-1.0] * 3 + [1.0] * 3)[:, None, None, None]
                                                     .expand(6, 3, 4, 4)), dim=1)
    assert table.features.dtype == torch.float16 and torch.allclose(table.features.float(), expected, atol=1e-3)
    lean = NeighbourTable(k=2, refresh_every=1, keep_bank=False)
    lean.refresh(0, encoder, images.numpy(), torch.arange(6), image_size=4, device="cpu", progress=False)
    assert lean.features is None and torch.equal(lean.indices, table.indices)


def test_scan_selects_same_label_neighbours_of_labelled_anchors():
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 1]])
    labels = torch.tensor([0, 0, -1])
    mask = same_label(torch.zeros(3, 2), neighbours, labels)
    assert mask.tolist() == [[True, False], [True, False], [False, False]]
    with pytest.raises(DataError, match="label_split"):
        same_label(torch.zeros(3, 2), neighbours, torch.full((3,), -1))


def test_settings_are_checked():
    from vipr.ssl.clim import CLIMConfig
    from vipr.ssl.hsa import HSAConfig
    with pytest.raises(ConfigError, match="rule"):
        CLIMConfig(rule="median")
    with pytest.raises(ConfigError, match="same length"):
        HSAConfig(stages=(1, 2), stage_weights=(0.5,))
    with pytest.raises(ConfigError, match="symmetric"):  # before training, not silently ignored
        HSAConfig(symmetric=True)
    with pytest.raises(ConfigError, match="use_faiss"):  # before training, not at the first refresh
        CLIMConfig(use_faiss="maybe")
    assert auto_clusters(500) == 5 and auto_clusters(10) == 2 and auto_clusters(10**7) == 1000
