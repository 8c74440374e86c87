"""Device, precision and thread choices."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from vipr.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: this rank's GPU when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no GPU is visible; use --set train.device=cpu")
    return device


def cpu_has_fast_bf16() -> bool:
    """bf16 autocast pays on CPUs with AVX512-BF16 or AMX (about 2x a ResNet step here)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware runs it fast, else fp32."""
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"unknown precision '{precision}'; use auto, bf16, fp16 or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def precision_autocast(device: torch.device, precision: str):
    """Autocast to bf16 / fp16 for a resolved ``precision`` (see resolve_precision); no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
