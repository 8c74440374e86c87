"""Architecture-search step time and peak memory: DARTS (1st / 2nd order), P-DARTS, PC-DARTS, GOLD-NAS.

The search setting of the papers: C = 16, 8 cells, batch 64, 32 px images (random data, 10
classes), through the strategies' own ``arch_step`` / ``weight_step`` (vipr.nas.strategy) with
the runner's defaults (``precision: auto`` = fp32 on CPU, channels-last). P-DARTS is timed in
its first stage (5 cells, 8 ops); PC-DARTS with K = 4 and edge normalisation; GOLD-NAS (one
level: alpha and weights in ``weight_step``).

Seconds per step: the median of ``--steps`` steps after ``--warmup`` steps. Peak memory: the
peak resident set size (``ru_maxrss``) of a fresh subprocess per strategy, so peaks never mix
(tracemalloc does not see torch's allocations). The authors' code, fp32, measured on the same
machine, is included as ``reference`` so the docs table can show the ratios.

    python benchmarks/nas.py            # one JSON line on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_common import machine_info  # noqa: E402

# The authors' code (quark0/darts, yuhuixu1993/PC-DARTS), fp32, this machine: seconds per step, peak RSS GB.
REFERENCE = {
    "darts_1st": {"arch_s": 8.9, "weight_s": 9.1, "peak_rss_gb": 11.0},
    "darts_2nd": {"arch_s": 38.6, "weight_s": 12.5, "peak_rss_gb": 14.3},
    "pcdarts": {"arch_s": 3.1, "weight_s": 3.1, "peak_rss_gb": 4.3},
}
CASES = {  # name -> strategy settings
    "darts_1st": {"name": "darts", "order": 1},
    "darts_2nd": {"name": "darts", "order": 2},
    "pdarts": {"name": "pdarts"},
    "pcdarts": {"name": "pcdarts", "partial_channels": 4},
    "goldnas": {"name": "goldnas"},
}


def build(case: str, batch: int):
    from vipr.nas.search import build_config, resolve_search_precision
    from vipr.nas.strategy import SearchContext, create_strategy

    config = build_config({"network": {"channels": 16, "layers": 8}, "train": {"batch_size": batch},
                           "data": {"image_size": 32}, "strategy": CASES[case]})
    device = torch.device("cpu")
    context = SearchContext(config, 10, 100, device, resolve_search_precision(config.train.precision, device),
                            {"strategy": case})
    return create_strategy(context), config


def measure(case: str, batch: int, warmup: int, steps: int) -> dict:
    """One strategy in this process: median seconds per arch / weight step, peak RSS."""
    torch.manual_seed(0)
    strategy, config = build(case, batch)
    strategy.begin_epoch(0)
    batches = [(torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))) for _ in range(2)]
    arch_times, weight_times = [], []
    bilevel = strategy.uses_val_split
    for i in range(warmup + steps):
        if bilevel:
            t0 = time.perf_counter()
            strategy.arch_step(batches[0], batches[1])
            arch_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        strategy.weight_step(batches[0])
        weight_times.append(time.perf_counter() - t0)
    median = lambda xs: round(statistics.median(xs[warmup:]), 3) if xs else None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"arch_s": median(arch_times), "weight_s": median(weight_times),
            "peak_rss_gb": round(peak_kib / 2**20, 3), "precision": strategy_precision(strategy),
            "channels_last": config.train.channels_last}


def strategy_precision(strategy) -> str | None:
    return getattr(getattr(strategy, "search", strategy), "precision", None)


def run_case(case: str, args) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--steps", str(args.steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="measure one strategy in this process (internal)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.batch, args.warmup, args.steps)))
        return
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {case: run_case(case, args) for case in CASES}
    for case, ref in REFERENCE.items():
        got = results.get(case, {})
        if "error" not in got:
            got["vs_reference"] = {k: round(got[k] / v, 3) for k, v in ref.items() if got.get(k)}
    darts, pc = results.get("darts_1st", {}), results.get("pcdarts", {})
    summary = {"pcdarts_over_darts_peak_rss": round(pc["peak_rss_gb"] / darts["peak_rss_gb"], 3)
               if pc.get("peak_rss_gb") and darts.get("peak_rss_gb") else None}
    print(json.dumps({"benchmark": "nas_search_steps", "setting": {"channels": 16, "layers": 8, "batch": args.batch,
                      "image_size": 32, "warmup": args.warmup, "steps": args.steps},
                      "results": results, "reference": REFERENCE, **summary,
                      "torch_import_rss_gb": round(baseline_kib / 2**20, 3),
                      "load_average": [round(x, 2) for x in os.getloadavg()], "machine": machine_info()}))


if __name__ == "__main__":
    main()
