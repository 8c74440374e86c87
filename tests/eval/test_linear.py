"""Linear probe: separable blobs are learnt, the folded head equals the standardised model."""

import torch

from vipr.eval.linear import fit_standardized, fold_standardization, train_linear


def blobs(n, num_classes=4, dim=24, seed=0, decades=3, offset=50.0):
    """Gaussian blobs on wildly different feature scales (as raw backbone features can be)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    labels = torch.randint(0, num_classes, (n,), generator=g)
    x = centers[labels] + torch.randn(n, dim, generator=g)
    scale = torch.logspace(-decades, decades, dim)  # 1e-3 .. 1e3 by default
    return (x + offset) * scale, labels


def test_probe_separates_blobs_on_any_scale():
    train_x, train_y = blobs(600)
    test_x, test_y = blobs(300, seed=1)
    head = train_linear(train_x, train_y, 4, epochs=20)
    assert isinstance(head, torch.nn.Linear) and head.weight.shape == (4, 24)
    accuracy = (head(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.97


def test_folded_head_equals_standardised_model():
    # A mean of a few stds, as pooled ReLU features have: folding subtracts W' mean inside
    # the float32 matmul, so a mean of 1e4 stds would lose 4 digits to cancellation.
    x, y = blobs(300, decades=2, offset=5.0)
    linear, mean, std = fit_standardized(x, y, 4, epochs=5)
    folded = fold_standardization(linear, mean, std)
    test_x, _ = blobs(200, seed=2, decades=2, offset=5.0)
    standardised_logits = linear((test_x - mean) / std)
    torch.testing.assert_close(folded(test_x), standardised_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(folded(test_x).argmax(1), standardised_logits.argmax(1))


def test_probe_is_deterministic_from_seed():
    x, y = blobs(200)
    a, b = train_linear(x, y, 4, epochs=3, seed=5), train_linear(x, y, 4, epochs=3, seed=5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, train_linear(x, y, 4, epochs=3, seed=6).weight)


def test_constant_feature_stays_finite():
    x, y = blobs(100)
    x[:, 0] = 7.0
    head = train_linear(x, y, 4, epochs=2)
    assert torch.isfinite(head.weight).all() and torch.isfinite(head.bias).all()
    assert head.weight[:, 0].abs().max() == 0
