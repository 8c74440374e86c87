"""Device, precision and thread choices.

One resolver for every command's ``--device`` (and the ``train.device`` / ``device`` config
keys): ``auto`` (this rank's GPU when there is one, else the CPU; Apple's ``mps`` only when
asked for), ``cpu``, ``cuda`` (this rank's GPU), ``cuda:N``, ``mps``. A device the machine
lacks fails at once, in one line naming the flag and what to use instead.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from vipr.config import DEVICE
from vipr.errors import ConfigError

DEVICE_NAMES = DEVICE.values  # declared in vipr.config, beside the other value sets


def resolve_device(name: str = "auto", flag: str = "--device") -> torch.device:
    """The ``torch.device`` for ``name`` (see the module docstring), or a ConfigError naming ``flag``."""
    if not DEVICE.allows(name):
        raise ConfigError(f"{flag} {name}: unknown device; use {' | '.join(DEVICE_NAMES)}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # under torchrun: this process's GPU
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{flag} mps: no Apple MPS device on this machine; use {flag} cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag} {name}: no CUDA device on this machine; use {flag} cpu or auto")
    index = local_rank if name == "cuda" else int(name.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                          f"pick one of them, or {flag} cuda or auto")
    return torch.device("cuda", index)


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
