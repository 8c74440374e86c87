"""Few-label fine-tuning: vipr's recipe against the changes the literature suggests, from random and pre-trained starts.

    python benchmarks/finetune_recipe.py               # the grid below, then docs/results.md's section
    python benchmarks/finetune_recipe.py --render-only

The starts are the methods table's own checkpoints (benchmarks/results.py: the `tiny` conv net,
32 px, seed 0, its pre-training recipe and epochs on builtin:digits and the photo development set),
pre-trained once into ``--work-dir``. Each start is fine-tuned on 1% and 10% label splits (one split
per seed, ``make_label_split``) with the results table's 200 steps, and scored on the test split:

- ``recipe``: vipr's default (zero-initialised head, backbone lr = head lr / 10; vipr.eval.finetune);
- ``probe``: the head starts as a linear probe of the frozen features (LP-FT, arXiv 2202.10054);
- ``lr1``: the backbone at the head's lr; ``probe+lr1``: both;
- ``frozen``: backbone lr 0 (BatchNorm statistics still adapt): what fine-tuning adds over the features;
- ``auto``: ``vipr eval finetune --strategy auto``, the ``recipe`` or the frozen features' linear
  probe, chosen on a held-out fifth of the labels (vipr.eval.finetune_select).

Each run appends one JSON line to benchmarks/results/finetune_recipe.jsonl (kept: an interrupted
grid continues); the table in docs/results.md is re-rendered from every line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results as table  # noqa: E402  (sibling script: the methods table's recipe and checkpoints)

RECORDS = HERE / "results" / "finetune_recipe.jsonl"
VARIANTS = {"recipe": {}, "probe": {"head_init": "probe"}, "lr1": {"backbone_lr_scale": 1.0},
            "probe+lr1": {"head_init": "probe", "backbone_lr_scale": 1.0}, "frozen": {"backbone_lr_scale": 0.0},
            "auto": {"strategy": "auto"}}  # the others are full fine-tunes (strategy "full")
STARTS = ("random", "moco_v2", "simclr")
# (label %, start, variant, seeds): every variant at 10%, the two leading recipes again at 1%
GRID = [(10, "random", v, (0, 1)) for v in ("recipe", "lr1")] + \
       [(10, "moco_v2", v, (0, 1)) for v in ("recipe", "probe", "probe+lr1", "frozen")] + \
       [(10, "simclr", v, (0, 1)) for v in ("recipe", "probe")] + \
       [(1, "random", "recipe", (0, 1, 2))] + \
       [(1, s, v, (0, 1, 2)) for s in ("moco_v2", "simclr") for v in ("recipe", "probe")] + \
       [(10, s, "auto", (0, 1)) for s in STARTS] + [(1, s, "auto", (0, 1, 2)) for s in STARTS]
DATASETS = ("digits", "photos")


def checkpoint(dataset: str, start: str, work: Path) -> str:
    """The start's checkpoint folder, pre-trained as the methods table does (once)."""
    if start == "random":
        return "random"
    folder = work / dataset / start / "pretrain"
    if not (folder / "checkpoint.pt").is_file():
        source, epochs = table.DATASETS[dataset]
        table.pretrain(folder, table.pretrain_overrides(start, table.resolve(source), epochs, 0))
    return str(folder)


def run(dataset: str, start: str, variant: str, percent: int, seed: int, work: str) -> dict:
    import torch

    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split, save_label_split
    from vipr.eval.finetune import run_finetune

    torch.set_num_threads(1)
    source = table.resolve(table.DATASETS[dataset][0])
    split = Path(work) / "splits" / f"{dataset}-{percent}pct-seed{seed}.json"
    split.parent.mkdir(parents=True, exist_ok=True)
    if not split.is_file():
        images = open_dataset(source)
        labelled = make_label_split(images.train.labels, label_fraction=percent / 100, seed=seed)
        save_label_split(split, labelled, images)
    metrics = run_finetune(checkpoint=checkpoint(dataset, start, Path(work)), data=source, backbone="tiny",
                           image_size=32, progress=False, label_split=str(split), seed=seed,
                           min_steps=table.FINETUNE_MIN_STEPS, **{"strategy": "full", **VARIANTS[variant]})
    return {"dataset": dataset, "start": start, "variant": variant, "percent": percent, "seed": seed,
            "steps": metrics["steps"], "top1": round(metrics["top1"], 2), "chosen": metrics["chosen"]}


def load() -> list[dict]:
    return [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.is_file() else []


def key(r: dict) -> tuple:
    return r["dataset"], r["start"], r["variant"], r["percent"], r["seed"]


def section(records: list[dict]) -> list[str]:
    """docs/results.md's table: mean ± std over seeds per dataset, label share, start and variant."""
    if not records:
        return []
    cells: dict = {}
    probes: dict = {}  # cell -> how many of its runs kept the probe (auto)
    for r in records:
        cell = (r["dataset"], r["percent"], r["start"], r["variant"])
        cells.setdefault(cell, []).append(r["top1"])
        probes[cell] = probes.get(cell, 0) + (r.get("chosen") == "probe")
    machines = sorted({f"{r['cpu']} ({r['cores']} cores), {r['date']}" for r in records})
    lines = ["## Few-label fine-tuning: the recipe against its alternatives\n",
             "Measured by `python benchmarks/finetune_recipe.py` on " + "; ".join(machines) + ". "
             "Starts: random init and this page's own seed-0 `moco_v2` and `simclr` checkpoints (tables above); "
             "200 steps on 1% / 10% label splits, top-1 (%) mean ± std over the seeds shown. `recipe` is "
             "`vipr eval finetune`'s full fine-tune, its default (zero-initialised head, backbone lr = head lr / 10); `probe` starts the "
             "head as a linear probe of the frozen features (LP-FT); `lr1` trains the backbone at the head's lr; "
             "`frozen` keeps the backbone's weights (lr 0, BatchNorm statistics adapt); `auto` (`vipr eval finetune "
             "--strategy auto`) keeps the `recipe` or the frozen features' linear probe, whichever scores higher on "
             "a held-out fifth of the labels (the cell says how many runs kept the probe). The `auto` rows were "
             "measured later than the others, from starts pre-trained again with the same settings, which are not "
             "bit-identical to the first ones: where `auto` kept the full fine-tune, its difference from `recipe` "
             "is that of the checkpoints.\n",
             "*Δ recipe* is the difference of the means against the same start's `recipe` row, *Δ random* the "
             "`recipe` row's against random init's; *clear* when it exceeds the larger of the two standard "
             "deviations.\n",
             "| set | labels | start | variant | top-1 | seeds | Δ recipe | Δ random |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    order = {name: i for i, name in enumerate(VARIANTS)}
    for (dataset, percent, start, variant), tops in sorted(
            cells.items(), key=lambda kv: (kv[0][0], kv[0][1], STARTS.index(kv[0][2]), order[kv[0][3]])):
        spread = f" ± {statistics.stdev(tops):.1f}" if len(tops) > 1 else ""
        recipe = cells.get((dataset, percent, start, "recipe"))
        random = cells.get((dataset, percent, "random", "recipe"))
        versus_recipe = _difference(tops, recipe) if variant != "recipe" else ""
        versus_random = _difference(tops, random) if variant == "recipe" and start != "random" else ""
        label = f"{variant} (probe {probes[dataset, percent, start, variant]}/{len(tops)})" if variant == "auto" \
            else variant
        lines.append(f"| {dataset} | {percent}% | {start} | {label} | {statistics.mean(tops):.1f}{spread} | "
                     f"{len(tops)} | {versus_recipe} | {versus_random} |")
    return lines + ["", _reading(cells), ""]


def _reading(cells: dict) -> str:
    """One sentence computed from the cells: which variants clearly beat the recipe, and where the recipe
    from a pre-trained start is below random init."""
    better = [f"{v} ({d} {p}%, {s})" for (d, p, s, v), tops in cells.items()
              if v != "recipe" and (d, p, s, "recipe") in cells and _clear(tops, cells[d, p, s, "recipe"])
              and statistics.mean(tops) > statistics.mean(cells[d, p, s, "recipe"])]
    below = [f"{s} ({d} {p}%)" for (d, p, s, v), tops in cells.items()
             if v == "recipe" and s != "random" and (d, p, "random", "recipe") in cells
             and statistics.mean(tops) < statistics.mean(cells[d, p, "random", "recipe"])]
    return ("Variants clearly above the recipe: " + (", ".join(better) or "none") + ". Pre-trained starts whose "
            "recipe row is below random init's: " + (", ".join(below) or "none") + ".")


def _difference(tops: list[float], base: list[float] | None) -> str:
    """Mean difference in points, marked *clear* as :func:`_clear` says; empty without a base."""
    if not base:
        return ""
    return f"{statistics.mean(tops) - statistics.mean(base):+.1f}" + (" *clear*" if _clear(tops, base) else "")


def _clear(tops: list[float], base: list[float]) -> bool:
    """The means differ by more than the larger std of the two (never with one run each)."""
    spreads = [statistics.stdev(t) for t in (tops, base) if len(t) > 1]
    return bool(spreads) and abs(statistics.mean(tops) - statistics.mean(base)) > max(spreads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="runs/finetune_recipe", help="checkpoints and label splits")
    parser.add_argument("--workers", type=int, default=2, help="parallel single-thread runs (default 2)")
    parser.add_argument("--render-only", action="store_true", help="re-render docs/results.md")
    args = parser.parse_args()
    if not args.render_only:
        from benchmarks_common import machine_info

        machine = {k: v for k, v in machine_info().items() if k in ("cpu", "cores", "date", "torch")}
        done = {key(r) for r in load()}
        for dataset in DATASETS:  # checkpoints first, one process each, so no two workers pre-train the same
            for start in STARTS:
                checkpoint(dataset, start, Path(args.work_dir))
        jobs = [(d, s, v, p, seed) for d in DATASETS for p, s, v, seeds in GRID for seed in seeds
                if (d, s, v, p, seed) not in done]
        with ProcessPoolExecutor(args.workers) as pool:
            for record in pool.map(run, *zip(*jobs), [args.work_dir] * len(jobs)) if jobs else []:
                record.update(machine)
                with RECORDS.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)
    result = json.loads(table.RESULTS.read_text())
    table.DOCS.write_text(table.render(result))


if __name__ == "__main__":
    main()
