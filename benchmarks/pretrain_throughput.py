"""MoCo v2 pre-training throughput: vipr against lightly 1.6.0's MoCo pipeline, side by side.

Settings shared by both: ResNet-18 with the small-image stem (3x3 stride-1 conv, no
max-pool), 32 px crops, batch 128, projection head 512-2048-128, queue 4096, one query and
one key view per image (lightly's MoCo is not symmetrised, so vipr runs with
method.symmetric=false here), no blur at 32 px (both libraries' CIFAR recipes), SGD.
Images are builtin:shapes (5,000 train images at 32 px), held in memory by both.

* vipr: uint8 batches, batched augmentation on the training device, bf16 autocast and
  channels-last (what `precision=auto` picks on this CPU), and fp32 for reference.
* lightly: its MoCo example (MoCoV2Transform per PIL image in DataLoader workers,
  NTXentLoss with a memory bank, update_momentum); fp32 as in its example, and with bf16
  autocast + channels-last added so the comparison is not only about precision.

The bound: the machine's measured bf16 matmul rate divided by the FLOPs of one training
step per image (counted by torch.utils.flop_counter over a real step). Beside it, a profile
of vipr's bf16 step: the time its convolutions take (forward and backward, oneDNN), the rate
they reach (the step's FLOPs over that time) and the images/s they alone would allow; the
memory-bound BatchNorm, ReLU and residual-add passes; the rest. Prints one JSON line.

    pip install -e ".[bench]" && python benchmarks/pretrain_throughput.py
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from benchmarks_common import machine_info, matmul_tflops
from vipr.config import apply_overrides
from vipr.data.sources import open_dataset
from vipr.pretrain import build_config, build_trainer

DATA = "builtin:shapes"


def vipr_trainer(precision: str, batch_size: int, image_size: int):
    config = build_config(apply_overrides({}, [
        f"data.source={DATA}", f"data.image_size={image_size}", "model.backbone=resnet18", "method.name=moco_v2",
        "method.symmetric=false", "method.queue_size=4096", f"train.batch_size={batch_size}",
        f"train.precision={precision}", "train.progress=false"]))
    return build_trainer(config, open_dataset(DATA), torch.device("cpu"), Path("unused"))


def time_vipr(precision: str, batch_size: int, image_size: int, warmup: int, steps: int) -> float:
    """Images per second over ``steps`` full steps: batch read, augmentation, forward, backward, update."""
    trainer = vipr_trainer(precision, batch_size, image_size)
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader.iter_from(0))
    for _ in range(warmup):
        trainer.train_step(next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    return steps * batch_size / (time.perf_counter() - start)


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")
ELEMENTWISE_OPS = ("aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::add_", "aten::add",
                   "aten::clamp_min_", "aten::threshold_backward")


def step_breakdown(batch_size: int, image_size: int, steps: int = 3) -> dict:
    """Where one vipr bf16 step's time goes (torch.profiler self time, ms per image): the convolutions
    (forward and backward, oneDNN), the memory-bound BatchNorm / ReLU / residual-add passes, the rest."""
    from torch.profiler import ProfilerActivity, profile

    trainer = vipr_trainer("bf16", batch_size, image_size)
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader.iter_from(0))
    for _ in range(2):
        trainer.train_step(next(batches))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.train_step(next(batches))
    self_ms = {row.key: row.self_cpu_time_total / 1e3 for row in prof.key_averages()}
    images = steps * batch_size
    total = sum(self_ms.values()) / images
    conv = sum(self_ms.get(k, 0.0) for k in CONV_OPS) / images
    elementwise = sum(self_ms.get(k, 0.0) for k in ELEMENTWISE_OPS) / images
    return {"ms_per_image": total, "conv_ms_per_image": conv, "elementwise_ms_per_image": elementwise,
            "other_ms_per_image": total - conv - elementwise}


def flops_per_image(batch_size: int = 16, image_size: int = 32) -> float:
    """FLOPs (2 x multiply-adds) of one vipr MoCo step (query fwd+bwd, key fwd), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = vipr_trainer("fp32", batch_size, image_size)
    batch = next(iter(trainer.loader.iter_from(0)))
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return counter.get_total_flops() / batch_size


class LightlyMoCo(nn.Module):
    """lightly's examples/pytorch/moco.py model, with the small-image ResNet-18 stem."""

    def __init__(self):
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        resnet = torchvision.models.resnet18()
        resnet.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        resnet.maxpool = nn.Identity()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.projection_head = MoCoProjectionHead(512, 2048, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class PILImages(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        from PIL import Image

        self.images = [Image.fromarray(img.transpose(1, 2, 0)) for img in images]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), 0


def time_lightly(bf16: bool, batch_size: int, image_size: int, warmup: int, steps: int, workers: int) -> float:
    from lightly.loss import NTXentLoss
    from lightly.models.utils import update_momentum
    from lightly.transforms.moco_transform import MoCoV2Transform

    torch.manual_seed(0)
    model = LightlyMoCo()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    transform = MoCoV2Transform(input_size=image_size, gaussian_blur=0.0)
    dataset = PILImages(open_dataset(DATA).train.images, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    criterion = NTXentLoss(memory_bank_size=(4096, 128), temperature=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * batch_size / 256, momentum=0.9, weight_decay=1e-4)
    batches = iter(loader)

    def step():
        (x_query, x_key), _ = next(batches)
        if bf16:
            x_query, x_key = (x.contiguous(memory_format=torch.channels_last) for x in (x_query, x_key))
        update_momentum(model.backbone, model.backbone_momentum, m=0.99)
        update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x_query), model.forward_momentum(x_key))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per pipeline")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="lightly DataLoader workers (2 = the cores here)")
    parser.add_argument("--quick", action="store_true", help="4 timed steps, 1 warm-up")
    parser.add_argument("--skip-lightly", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 4, 1
    torch.set_num_threads(torch.get_num_threads())
    common = dict(batch_size=args.batch_size, image_size=args.image_size, warmup=args.warmup, steps=args.steps)
    result = {"benchmark": "pretrain_throughput", **machine_info(), "method": "moco_v2 (one query, one key view)",
              "backbone": "resnet18 small stem", **{k: v for k, v in common.items()}}
    result["matmul_tflops_bf16"] = matmul_tflops(torch.bfloat16)
    result["matmul_tflops_fp32"] = matmul_tflops(torch.float32)
    result["gflops_per_image"] = flops_per_image(image_size=args.image_size) / 1e9
    result["bound_images_per_s"] = result["matmul_tflops_bf16"] * 1e3 / result["gflops_per_image"]
    result["vipr_bf16_images_per_s"] = time_vipr("bf16", **common)
    result["vipr_fp32_images_per_s"] = time_vipr("fp32", **common)
    result["vipr_fraction_of_bound"] = result["vipr_bf16_images_per_s"] / result["bound_images_per_s"]
    breakdown = step_breakdown(args.batch_size, args.image_size)
    result["step_breakdown"] = breakdown
    # what the convolutions alone achieve: nearly all of a step's FLOPs are theirs
    result["conv_tflops_bf16"] = result["gflops_per_image"] / breakdown["conv_ms_per_image"]
    result["conv_bound_images_per_s"] = 1e3 / breakdown["conv_ms_per_image"]
    if not args.skip_lightly:
        result["lightly_fp32_images_per_s"] = time_lightly(False, workers=args.workers, **common)
        result["lightly_bf16_images_per_s"] = time_lightly(True, workers=args.workers, **common)
        result["speedup_vs_lightly_fp32"] = result["vipr_bf16_images_per_s"] / result["lightly_fp32_images_per_s"]
        result["speedup_vs_lightly_bf16"] = result["vipr_bf16_images_per_s"] / result["lightly_bf16_images_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
