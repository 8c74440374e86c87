"""Micro-benchmark: vipr's hand-written batched ops against kornia and torchvision equivalents.

Prints ONE JSON line: milliseconds per batch call (median of 3 timed runs after a
warm-up) on the CPU with 2 torch threads, at 32 px (batch 256, 32x32 input) and 224 px
(batch 64, 256x256 input), for

- crop: vipr ``resized_crop`` (affine_grid + grid_sample, flip folded into the matrix)
  vs ``torchvision.ops.roi_align`` (+ a flip) vs ``kornia.geometry.crop_and_resize``
  vs ``kornia.augmentation.RandomResizedCrop`` (+ RandomHorizontalFlip);
- colour jitter, per step and whole: vipr's ops vs kornia.enhance functional ops
  (the same formulas) vs ``kornia.augmentation.ColorJitter``;
- blur: a hand-written grouped-conv blur vs ``kornia.filters.gaussian_blur2d`` with
  per-sample sigma (what vipr uses) vs ``kornia.augmentation.RandomGaussianBlur``;
- pointwise: luma, solarize, normalize, hand-written vs kornia functional.

All kornia modules use ``same_on_batch=False`` (per-sample parameters).

Usage: PYTHONPATH=src python benchmarks/augment_ops.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable

import kornia
import kornia.augmentation as K
import torch
import torch.nn.functional as F
import torchvision

from benchmarks_common import machine_info
from vipr.data import augment_color as C
from vipr.data import augment_ops as A

SETTINGS = {32: (256, 32), 224: (64, 256)}  # crop side -> (batch, stored image side)


def time_ms(fn: Callable[[], object], reps: int) -> float:
    """Median over 3 runs of the mean wall time of ``reps`` calls, in ms, after one warm-up run."""
    fn()
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        runs.append((time.perf_counter() - start) * 1000 / reps)
    return round(statistics.median(runs), 3)


def crop_candidates(images: torch.Tensor, size: int) -> dict[str, Callable[[], object]]:
    """Batched crop + flip implementations, each drawing fresh boxes like a training step."""
    batch, _, height, width = images.shape
    g = torch.Generator().manual_seed(0)

    def boxes_and_flip() -> tuple[torch.Tensor, torch.Tensor]:
        return A.sample_crop_boxes(batch, height, width, (0.2, 1.0), (3 / 4, 4 / 3), g), A.coin_flips(batch, 0.5, g)

    def vipr() -> torch.Tensor:
        boxes, flip = boxes_and_flip()
        return A.resized_crop(images, boxes, size, flip)

    def roi_align() -> torch.Tensor:
        boxes, flip = boxes_and_flip()
        top, left, h, w = boxes.float().unbind(1)
        rois = torch.stack([torch.arange(batch, dtype=torch.float32), left, top, left + w, top + h], 1)
        out = torchvision.ops.roi_align(images, rois, size, 1.0, sampling_ratio=1, aligned=True)
        return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)

    def kornia_crop_and_resize() -> torch.Tensor:
        boxes, flip = boxes_and_flip()
        top, left, h, w = boxes.float().unbind(1)
        x1, y1, x2, y2 = left, top, left + w - 1, top + h - 1
        corners = torch.stack([torch.stack(p, 1) for p in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)
        out = kornia.geometry.transform.crop_and_resize(images, corners, (size, size))
        return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)

    rrc = {mode: K.RandomResizedCrop((size, size), (0.2, 1.0), cropping_mode=mode) for mode in ("resample", "slice")}
    hflip = K.RandomHorizontalFlip(p=0.5, same_on_batch=False)
    return {
        "vipr_affine_grid_sample": vipr,
        "torchvision_roi_align": roi_align,
        "kornia_crop_and_resize": kornia_crop_and_resize,
        "kornia_RandomResizedCrop_resample": lambda: hflip(rrc["resample"](images)),
        "kornia_RandomResizedCrop_slice": lambda: hflip(rrc["slice"](images)),
    }


def kornia_color_steps() -> tuple[Callable, ...]:
    """kornia.enhance's functional ops with torchvision's definitions, factor (B,) as vipr's."""
    E = kornia.enhance
    return (
        E.adjust_brightness_accumulative,
        E.adjust_contrast_with_mean_subtraction,
        E.adjust_saturation_with_gray_subtraction,
        lambda x, f: E.adjust_hue(x, f * 2 * math.pi),
    )


def color_candidates(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Per-step and whole-jitter timings; factors as moco_v2 draws them (p = 1 for the steps)."""
    g = torch.Generator().manual_seed(0)
    factors, _ = C.sample_jitter_factors(x.shape[0], (0.4, 0.4, 0.4, 0.1), 1.0, g)
    names = ("brightness", "contrast", "saturation", "hue")
    out: dict[str, Callable[[], object]] = {}
    for i, (name, mine, theirs) in enumerate(zip(names, C._STEPS, kornia_color_steps(), strict=True)):
        out[f"{name}_vipr"] = lambda mine=mine, i=i: mine(x, factors[:, i])
        out[f"{name}_kornia_enhance"] = lambda theirs=theirs, i=i: theirs(x, factors[:, i])
    jitter = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8, same_on_batch=False)
    out["jitter_p0.8_vipr"] = lambda: C.color_jitter(x, 0.4, 0.4, 0.4, 0.1, 0.8, g)
    out["jitter_p0.8_kornia_ColorJitter"] = lambda: jitter(x)
    return out


def grouped_conv_blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Hand-written candidate: batch folded into channels, one grouped 1-D conv per axis."""
    n, c, h, w = x.shape
    offsets = torch.arange(k, dtype=x.dtype) - k // 2
    kernels = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    y = F.pad(x.reshape(1, n * c, h, w), (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kernels.view(n * c, 1, k, 1), groups=n * c)
    return F.conv2d(y, kernels.view(n * c, 1, 1, k), groups=n * c).view(n, c, h, w)


def blur_candidates(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Blur of every sample (p = 1) with per-sample sigma ~ U(0.1, 2.0) px."""
    k = A.blur_kernel_size(x.shape[-1])
    g = torch.Generator().manual_seed(0)
    sigma = torch.empty(x.shape[0]).uniform_(0.1, 2.0, generator=g)
    blur = K.RandomGaussianBlur((k, k), (0.1, 2.0), p=1.0, same_on_batch=False)
    return {
        "hand_grouped_conv": lambda: grouped_conv_blur(x, sigma, k),
        "kornia_gaussian_blur2d (vipr uses)": lambda: A.blur_with_sigma(x, sigma, k),
        "kornia_RandomGaussianBlur": lambda: blur(x),
    }


def pointwise_candidates(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Grayscale, solarize and normalize: hand-written tensor ops vs kornia's functional ops."""
    thresholds = torch.full((x.shape[0],), 0.5)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return {
        "luma_vipr": lambda: A.luma(x),
        "luma_kornia_rgb_to_grayscale": lambda: kornia.color.rgb_to_grayscale(x),
        "solarize_where": lambda: torch.where(x >= thresholds.view(-1, 1, 1, 1), 1 - x, x),
        "solarize_kornia (vipr uses)": lambda: kornia.enhance.solarize(x, thresholds),
        "normalize_vipr": lambda: A.normalize(x, mean.tolist(), std.tolist()),
        "normalize_kornia": lambda: kornia.enhance.normalize(x, mean, std),
    }


def machine() -> dict[str, object]:
    """The shared machine description plus library versions and the 1-min load average (other jobs skew timings)."""
    return {**machine_info(), "torchvision": torchvision.__version__, "kornia": kornia.__version__,
            "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped children)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, sum(r.ru_utime + r.ru_stime for r in own)


def other_jobs_cores(start: tuple[float, float], wall_s: float) -> float:
    """Cores that other processes kept busy, on average, since ``start = cpu_seconds()``.

    On a shared machine another job stalls one of the 2 torch threads at every parallel op;
    a run with more than ~0.1 here is not a clean measurement.
    """
    busy, own = cpu_seconds()
    return round(max(0.0, (busy - start[0]) - (own - start[1])) / wall_s, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)  # kornia modules draw from the global generator
    start, wall_start = cpu_seconds(), time.perf_counter()
    result: dict[str, object] = {"benchmark": "augment_ops", "unit": "ms per batch call", **machine()}
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for size, (batch, side) in SETTINGS.items():
        reps = 2 if args.quick else (10 if size == 32 else 3)
        images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8).float().div_(255)
        no_flip = torch.zeros(batch, dtype=torch.bool)
        crops = A.resized_crop(images, A.sample_crop_boxes(batch, side, side), size, no_flip)  # (B, 3, S, S)
        groups = {"crop": crop_candidates(images, size), "color": color_candidates(crops)}
        groups["pointwise"] = pointwise_candidates(crops)
        if size >= 64:  # recipes turn blur off below 64 px
            groups["blur"] = blur_candidates(crops)
        result[f"{size}px_batch{batch}"] = {
            group: {name: time_ms(fn, reps) for name, fn in fns.items()} for group, fns in groups.items()
        }
    result["other_jobs_cores_during_run"] = other_jobs_cores(start, time.perf_counter() - wall_start)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
