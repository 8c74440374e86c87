"""lightly 1.6.0's CIFAR-10 benchmark recipes, run on a vipr backbone for the peer benchmark.

Each recipe is lightly's own parts (transform, heads, loss, momentum schedule) with the
optimiser of lightly's ``cifar10_benchmark.py``: SGD lr 0.06 x B/128, momentum 0.9, weight
decay 5e-4, cosine over the epochs. The backbone is vipr's (the same network both sides are
measured on); augmentation is lightly's per-image PIL pipeline, as its users run it, or, with
``aug="vipr"`` (an ablation), vipr's batched views of the same recipe, to tell the augmentation's
share of a difference from the rest of the recipe's.
Needs the ``bench`` extra (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from PIL import Image
from torch import nn


def _transform(method: str, image_size: int):
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, MoCoV2Transform, SimCLRTransform

    if method == "moco_v2":
        return MoCoV2Transform(input_size=image_size, gaussian_blur=0.0)
    if method == "simclr":
        return SimCLRTransform(input_size=image_size, cj_strength=0.5, gaussian_blur=0.0)
    return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=image_size, gaussian_blur=0.0),
                         view_2_transform=BYOLView2Transform(input_size=image_size, gaussian_blur=0.0))


class _Recipe(nn.Module):
    """One lightly benchmark model around ``backbone`` (vipr's: ``forward_features`` -> (N, D))."""

    def __init__(self, method: str, backbone: nn.Module):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity, NTXentLoss
        from lightly.models.modules import heads

        self.method, self.backbone, dim = method, backbone, backbone.feature_dim
        if method == "moco_v2":
            self.head = heads.MoCoProjectionHead(dim, 512, 128)
            self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        elif method == "simclr":
            self.head = heads.SimCLRProjectionHead(dim, 512, 128)
            self.criterion = NTXentLoss()
        else:
            self.head = nn.Sequential(heads.BYOLProjectionHead(dim, 1024, 256), heads.BYOLPredictionHead(256, 1024, 256))
            self.criterion = NegativeCosineSimilarity()
        self.momentum_backbone = self.momentum_head = None
        if method in ("moco_v2", "byol"):
            self.momentum_backbone = copy.deepcopy(backbone).requires_grad_(False)
            projection = self.head if method == "moco_v2" else self.head[0]
            self.momentum_head = copy.deepcopy(projection).requires_grad_(False)

    def _momentum(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.momentum_head(self.momentum_backbone.forward_features(x)).detach()

    def loss(self, x0: torch.Tensor, x1: torch.Tensor, progress: float) -> torch.Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        if self.momentum_backbone is not None:
            m = cosine_schedule(int(progress * 1_000_000), 1_000_000, 0.99, 1.0)
            update_momentum(self.backbone, self.momentum_backbone, m)
            update_momentum(self.head if self.method == "moco_v2" else self.head[0], self.momentum_head, m)
        z0, z1 = self.head(self.backbone.forward_features(x0)), self.head(self.backbone.forward_features(x1))
        if self.method == "simclr":
            return self.criterion(z0, z1)
        k0, k1 = self._momentum(x0), self._momentum(x1)
        return 0.5 * (self.criterion(z0, k1) + self.criterion(z1, k0))  # symmetric, as lightly's benchmark


def _views(transform, images: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """lightly's two views of each image ``rows`` (uint8 (N, 3, H, W)), stacked into two batches."""
    pairs = [transform(Image.fromarray(images[i].transpose(1, 2, 0))) for i in rows]
    return (torch.stack([p[0] for p in pairs]).contiguous(memory_format=torch.channels_last),
            torch.stack([p[1] for p in pairs]).contiguous(memory_format=torch.channels_last))


def _vipr_views(method: str, image_size: int, seed: int):
    """vipr's views of ``method``'s recipe (blur off at 32 px, as lightly's runs here), batched."""
    from vipr.data.augment import augment_views, get_recipe

    recipe, generator = get_recipe(method, image_size), torch.Generator().manual_seed(seed)
    return lambda images, rows: tuple(augment_views(torch.from_numpy(images[rows]), recipe,
                                                    generator=generator))


def pretrain(method: str, backbone: nn.Module, images: np.ndarray, *, image_size: int, epochs: int,
             batch_size: int, seed: int, precision: str, aug: str = "lightly") -> dict:
    """Train ``backbone`` in place with lightly's recipe (views by ``aug``: lightly | vipr); returns steps and seconds."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _Recipe(method, backbone).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.06 * batch_size / 128,
                                momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    transform, steps_per_epoch = _transform(method, image_size), len(images) // batch_size
    if aug == "vipr":
        views = _vipr_views(method, image_size, seed)
    else:
        views = lambda images, rows: _views(transform, images, rows)  # noqa: E731
    started, step = time.perf_counter(), 0
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for s in range(steps_per_epoch):
            x0, x1 = views(images, order[s * batch_size:(s + 1) * batch_size])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.loss(x0, x1, step / (epochs * steps_per_epoch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        scheduler.step()
    return {"steps": step, "seconds": time.perf_counter() - started, "loss": float(loss)}
