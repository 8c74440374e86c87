"""Architecture-search step time and peak memory: DARTS (1st / 2nd order), P-DARTS, PC-DARTS, GOLD-NAS.

The search setting of the papers: C = 16, 8 cells, batch 64, 32 px images (random data, 10
classes), through the strategies' own ``arch_step`` / ``weight_step`` (vipr.nas.strategy) with
the runner's defaults (``precision: auto`` = fp32 on CPU, channels-last). P-DARTS is timed in
its first stage (5 cells, 8 ops); PC-DARTS with K = 4 and edge normalisation; GOLD-NAS (one
level: alpha and weights in ``weight_step``).

Seconds per step: the median of ``--steps`` steps after ``--warmup`` steps. Peak memory: the
peak resident set size (``ru_maxrss``) of a fresh subprocess per strategy, so peaks never mix
(tracemalloc does not see torch's allocations).

The authors' code (quark0/darts, yuhuixu1993/PC-DARTS) is measured side by side in the same run
when its checkouts are given: DARTS first order, second order and PC-DARTS (K = 4) at the same
setting, data, warm-up, steps and median, each in its own fresh subprocess too
(benchmarks/nas_authors.py; it imports their code from the checkout and stubs only ``.cuda()``,
which a CPU refuses; the record lists the patches under ``authors_patches``). Their figures are the
record's ``reference``; each vipr case's ``vs_reference`` is vipr / authors. Without the checkouts
the authors' rows are left out.

    python benchmarks/nas.py                                   # vipr only: one JSON line on stdout
    python benchmarks/nas.py --darts-repo ~/src/darts --pcdarts-repo ~/src/PC-DARTS
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
from nas_authors import AUTHORS_CASES, AUTHORS_PATCHES, source_line, time_steps  # noqa: E402

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
    return {**summarise(arch_times, weight_times, warmup), "precision": strategy_precision(strategy),
            "channels_last": config.train.channels_last}


def measure_authors(case: str, repo: str, batch: int, warmup: int, steps: int) -> dict:
    """One case of the authors' code in this process, summarised exactly as measure() summarises vipr's."""
    arch_times, weight_times = time_steps(case, repo, batch, warmup, steps)
    return {**summarise(arch_times, weight_times, warmup), "precision": "fp32", "channels_last": False}


def summarise(arch_times: list[float], weight_times: list[float], warmup: int) -> dict:
    """Median seconds after the warm-up steps; this process's peak RSS in GB."""
    median = lambda xs: round(statistics.median(xs[warmup:]), 3) if xs else None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"arch_s": median(arch_times), "weight_s": median(weight_times), "peak_rss_gb": round(peak_kib / 2**20, 3)}


def strategy_precision(strategy) -> str | None:
    return getattr(getattr(strategy, "search", strategy), "precision", None)


def run_case(case: str, args, repo: str | None = None) -> dict:
    """One case in a fresh subprocess (vipr's, or the authors' when repo is given): its JSON line."""
    cmd = [sys.executable, __file__, "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--steps", str(args.steps)]
    cmd += ["--authors-case", case, "--repo", repo] if repo else ["--case", case]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def authors_repos(args) -> dict[str, str]:
    """Which checkouts were given: {"darts": path, "pcdarts": path}."""
    return {kind: path for kind, path in (("darts", args.darts_repo), ("pcdarts", args.pcdarts_repo)) if path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="measure one strategy in this process (internal)")
    parser.add_argument("--authors-case", choices=sorted(AUTHORS_CASES),
                        help="measure one case of the authors' code in this process (internal; with --repo)")
    parser.add_argument("--repo", help="the authors' checkout for --authors-case (internal)")
    parser.add_argument("--darts-repo", help="a checkout of quark0/darts: measure darts_1st / darts_2nd from it")
    parser.add_argument("--pcdarts-repo", help="a checkout of yuhuixu1993/PC-DARTS: measure pcdarts from it")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.batch, args.warmup, args.steps)))
        return
    if args.authors_case:
        print(json.dumps(measure_authors(args.authors_case, args.repo, args.batch, args.warmup, args.steps)))
        return
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    repos = authors_repos(args)
    results = {case: run_case(case, args) for case in CASES}
    authors = {case: run_case(case, args, repos[kind]) for case, (kind, _) in AUTHORS_CASES.items() if kind in repos}
    reference = {case: {k: got[k] for k in ("arch_s", "weight_s", "peak_rss_gb")} for case, got in authors.items()
                 if "error" not in got}
    for case, ref in reference.items():
        got = results.get(case, {})
        if "error" not in got:
            got["vs_reference"] = {k: round(got[k] / v, 3) for k, v in ref.items() if got.get(k) and v}
    darts, pc = results.get("darts_1st", {}), results.get("pcdarts", {})
    summary = {"pcdarts_over_darts_peak_rss": round(pc["peak_rss_gb"] / darts["peak_rss_gb"], 3)
               if pc.get("peak_rss_gb") and darts.get("peak_rss_gb") else None}
    errors = {case: got["error"] for case, got in authors.items() if "error" in got}
    print(json.dumps({"benchmark": "nas_search_steps", "setting": {"channels": 16, "layers": 8, "batch": args.batch,
                      "image_size": 32, "warmup": args.warmup, "steps": args.steps},
                      "results": results, "reference": reference, "reference_source": source_line(repos),
                      "authors_patches": AUTHORS_PATCHES if repos else [],
                      **({"reference_errors": errors} if errors else {}), **summary,
                      "torch_import_rss_gb": round(baseline_kib / 2**20, 3),
                      "load_average": [round(x, 2) for x in os.getloadavg()], "machine": machine_info()}))


if __name__ == "__main__":
    main()
