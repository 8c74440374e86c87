"""Shared pieces of the benchmark scripts: the machine description and its matmul rate."""

from __future__ import annotations

import datetime
import os
import platform
import time

import torch

from vipr.engine.rundir import cpu_name


# the instruction sets that decide which kernels bf16 and int8 run on (/proc/cpuinfo flag names)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU has (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return []
    return [name for name in CPU_FEATURES if name in flags]


def machine_info() -> dict:
    """Who measured: CPU/GPU, its instruction sets, cores, torch version, date (UTC)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def matmul_tflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Measured dense matmul rate (TFLOP/s) for square n x n operands: the machine's compute bound."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(3):
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best / 1e12


def wait_until_idle(busy_below: float = 0.15, window_s: float = 0.25, max_s: float = 30.0) -> float:
    """Block until the machine's busy cores (all processes, /proc/stat) stay under ``busy_below`` for one
    ``window_s`` window, at most ``max_s``; returns the seconds waited. Between the sides of an alternated
    timing: a loader's workers or prefetch thread refilling in the background after its side's timing
    would otherwise run during the next side's."""
    ticks, start = os.sysconf("SC_CLK_TCK"), time.perf_counter()
    while time.perf_counter() - start < max_s:
        before = _busy_ticks()
        time.sleep(window_s)
        if (_busy_ticks() - before) / ticks / window_s < busy_below:
            break
    return time.perf_counter() - start


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal
