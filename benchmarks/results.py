"""The methods table: every pre-training method at the same budget, five evaluations, three seeds.

    python benchmarks/results.py                  # everything (about an hour on 2 cores), then docs/results.md
    python benchmarks/results.py --render-only    # re-render docs/results.md from the JSON
    python benchmarks/results.py --datasets shapes --methods moco_v2 hsa --seeds 0 --no-cost  # a slice
    python benchmarks/results.py --datasets digits_long shapes_long \
        --methods moco_v2 moco_v2_asym clim hsa scan --no-cost   # the five-times-longer tables

For each dataset, seed and method: pre-train the `tiny` conv net (random init skips this),
then kNN (k 200, T 0.07), a linear probe, whole-network fine-tuning with 1% and 10% of the
labels (splits drawn per seed with `make_label_split`; the CLI's recipe with at least 200
steps) and 5-way 5-shot prototype episodes on the frozen features. Jobs run in ``--workers``
processes of one thread each (a tiny net keeps one core busy; two threads on a busy 2-core
machine wait on each other). Each job's result is kept in
``--work-dir``, so an interrupted run continues where it stopped. Every job prints one JSON
line; the summary (mean and std over seeds) goes to benchmarks/results/results.json and
docs/results.md, with the cost table of benchmarks/method_cost.py, run once the workers are done
(``--no-cost`` keeps the last one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "results.json"
DOCS = HERE.parent / "docs" / "results.md"
METHODS = ("random", "supervised", "simclr", "moco_v2", "moco_v2_asym", "byol", "nnclr", "clim", "hsa", "scan")
# table rows that are a method with other settings: MoCo v2 as the paper (one query per image), the
# core CLIM and CsMl build on; vipr's default moco_v2 is symmetric (both views as query, MoCo V2+)
VARIANTS = {"moco_v2_asym": ("moco_v2", ["method.symmetric=false"])}
NEIGHBOUR_METHODS = ("clim", "hsa", "scan")
# source, pre-training epochs: about 40k images seen per run on either dataset (2 cores, 3 seeds, 9 methods)
DATASETS = {"shapes": ("builtin:shapes?train=2000&test=500", 20), "digits": ("builtin:digits", 30),
            # the photo development set (benchmarks/photo_sets.py regenerates it): 1,100 train images, 30 epochs
            "photos": ("photos", 30),
            # opt-in, five times the steps (the MoCo family: --methods moco_v2 moco_v2_asym clim hsa scan)
            "digits_long": ("builtin:digits", 150), "shapes_long": ("builtin:shapes?train=2000&test=500", 100)}
DEFAULT_DATASETS = ("shapes", "digits", "photos")
PHOTO_SETS = ("photos", "photos_b")  # sources named after a set of benchmarks/photo_sets.py


def resolve(source: str) -> str:
    """The ``--data`` value of a table's source: a photo set is written (once) as an .npz first."""
    if source not in PHOTO_SETS:
        return source
    sys.path.insert(0, str(HERE))
    from photo_sets import build

    return str(build(source))
FINETUNE_MIN_STEPS = 200  # `vipr eval finetune` defaults to 500; 200 keeps the table within an hour
EVALS = ("knn", "linear", "finetune_1", "finetune_10", "fewshot_5w5s")
NEIGHBOUR_STATS = ("positive_purity", "anchors_with_positive")  # neighbour methods' final table vs the labels
BATCH_SIZE = 128


def pretrain_overrides(method: str, source: str, epochs: int, seed: int) -> list[str]:
    """The one recipe every method shares; neighbour methods get a schedule scaled to the budget."""
    method, extra = VARIANTS.get(method, (method, []))
    settings = [f"data.source={source}", "data.image_size=32", "model.backbone=tiny", f"method.name={method}",
                f"train.epochs={epochs}", f"train.batch_size={BATCH_SIZE}", f"train.seed={seed}",
                "train.progress=false", "train.checkpoint_every=0"]
    if method in NEIGHBOUR_METHODS:
        # first bank after a third of the run, refreshed every sixth (CsMl at 200 epochs: 10 and 5)
        settings += [f"method.warmup_epochs={epochs // 3}", f"method.refresh_every={max(1, epochs // 6)}"]
    return settings + extra


def run_job(dataset: str, method: str, seed: int, work_dir: str, reevaluate: bool = False, measured: str = "") -> dict:
    """Pre-train (unless random) and evaluate one cell; cached in WORK/dataset/method/seedN/result.json.
    ``measured`` ("CPU, date") is kept in a new record: slices run on other machines say where each row came from."""
    import torch

    torch.set_num_threads(1)
    folder = Path(work_dir) / dataset / method / f"seed{seed}"
    done = folder / "result.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if reevaluate:  # the same checkpoints, evaluated again (after an evaluation recipe changed)
            checkpoint = "random" if method == "random" else str(folder / "pretrain")
            record.update(evaluate(checkpoint, resolve(DATASETS[dataset][0]), seed, folder))
        if method in NEIGHBOUR_METHODS and "positive_purity" not in record:  # added to cached runs
            record.update(neighbour_purity(folder / "pretrain", resolve(DATASETS[dataset][0])))
        done.write_text(json.dumps(record))
        return record
    folder.mkdir(parents=True, exist_ok=True)
    source, epochs = DATASETS[dataset]
    source = resolve(source)
    record = {"dataset": dataset, "method": method, "seed": seed, "epochs": epochs, "measured": measured}
    checkpoint = "random"
    if method != "random":
        record.update(pretrain(folder / "pretrain", pretrain_overrides(method, source, epochs, seed)))
        checkpoint = str(folder / "pretrain")
    record.update(evaluate(checkpoint, source, seed, folder))
    if method in NEIGHBOUR_METHODS:
        record.update(neighbour_purity(folder / "pretrain", source))
    done.write_text(json.dumps(record))
    return record


def neighbour_purity(run: Path, source: str) -> dict:
    """The final neighbour table of a CLIM / HSA / SCAN run against the true labels (which the
    self-supervised methods never see): the % of candidate positives of the anchor's class, and
    the % of anchors with a candidate."""
    import torch

    from vipr.data.sources import open_dataset
    from vipr.engine import checkpoint as ckpt

    table = ckpt.load(run)["state"]["model"]["table._extra_state"]
    labels = torch.as_tensor(open_dataset(source).train.labels, dtype=torch.long)
    candidates = table["candidates"]
    same = (labels[table["indices"]] == labels[:, None]) & candidates
    has = candidates.any(1)
    purity = same.sum(1)[has].float() / candidates.sum(1)[has].float()
    return {"positive_purity": 100 * purity.mean().item(), "anchors_with_positive": 100 * has.float().mean().item()}


def pretrain(out: Path, overrides: list[str]) -> dict:
    import shutil

    from vipr.config import apply_overrides
    from vipr.pretrain import build_config, run_pretrain

    shutil.rmtree(out, ignore_errors=True)  # an unfinished job starts again
    run_pretrain(build_config(apply_overrides({}, overrides)), out)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "epoch_seconds" in line]
    seconds = [e["epoch_seconds"] for e in epochs]
    return {"epoch_seconds": statistics.median(seconds), "pretrain_seconds": sum(seconds)}


def evaluate(checkpoint: str, source: str, seed: int, folder: Path) -> dict:
    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split, save_label_split
    from vipr.eval.fewshot import run_fewshot
    from vipr.eval.finetune import run_finetune
    from vipr.eval.runner import run_eval

    common = {"checkpoint": checkpoint, "data": source, "backbone": "tiny", "image_size": 32, "progress": False}
    out = {"knn": run_eval("knn", **common)["top1"], "linear": run_eval("linear", **common)["top1"]}
    dataset = open_dataset(source)
    for percent in (1, 10):
        split = folder / f"labels-{percent}pct.json"
        save_label_split(split, make_label_split(dataset.train.labels, label_fraction=percent / 100, seed=seed), dataset)
        out[f"finetune_{percent}"] = run_finetune(**common, label_split=str(split), seed=seed, strategy="full",
                                                  min_steps=FINETUNE_MIN_STEPS)["top1"]  # the full fine-tune's
    out["fewshot_5w5s"] = run_fewshot(**common, ways=5, shots=5, seed=seed)["accuracy"]
    return out


def summarise(records: list[dict]) -> dict:
    """Mean and std over seeds per (dataset, method); epoch times stay in the records (they ran in parallel
    with other jobs, so relative cost comes from benchmarks/method_cost.py instead)."""
    table: dict = {}
    for r in records:
        table.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    summary = {}
    for dataset, methods in table.items():
        for method, runs in methods.items():
            row = {"seeds": sorted(r["seed"] for r in runs)}
            for metric in (m for m in EVALS + NEIGHBOUR_STATS if all(m in r for r in runs)):
                values = [r[metric] for r in runs]
                row[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
            summary.setdefault(dataset, {})[method] = row
    return summary


def measured_where(result: dict) -> str:
    """Where the rows were measured: each record's "CPU, date" (main() fills it in for records cached
    before they carried it), the most common first, then each other with its rows."""
    m = result["machine"]
    groups: dict[str, set[str]] = {}
    for r in result["records"]:
        groups.setdefault(r["measured"], set()).add(f"{r['dataset']} {r['method']}")
    ordered = sorted(groups, key=lambda where: -len(groups[where]))
    setup = f"{m['cores']} cores, torch {m['torch']}, single-thread worker processes"
    others = "".join(f"; {', '.join(sorted(groups[where]))} on {where}" for where in ordered[1:])
    return f"measured on {ordered[0]} ({setup}){others}"


def render(result: dict) -> str:
    names = {"knn": "kNN", "linear": "linear", "finetune_1": "fine-tune 1%", "finetune_10": "fine-tune 10%",
             "fewshot_5w5s": "5-way 5-shot"}
    lines = ["# Results: pre-training methods side by side\n",
             "Generated by `python benchmarks/results.py` (raw records in `benchmarks/results/results.json`). "
             "Top-1 accuracy in % on the test split, "
             + (f"one seed ({result['seeds'][0]})" if len(result["seeds"]) == 1 else
                f"mean ± std over seeds {', '.join(map(str, result['seeds']))}")
             + f"; `tiny` conv net, 32 px, batch {BATCH_SIZE}, each method "
             "with its defaults (at 32 px the small-image profile, vipr.profiles) and its augmentation recipe. `moco_v2` is vipr's default (symmetric: both views serve as "
             "query, MoCo V2+); `moco_v2_asym` is MoCo v2 as published, the core CLIM and CsMl/HSA build on. "
             "CLIM, HSA and SCAN train plain MoCo for the first third of the epochs, then refresh their "
             "feature bank every sixth. The `random` row is one fixed random initialisation; its spread comes "
             "from the label splits and fine-tuning order only.\n",
             "The default tables give each run 250-330 optimizer steps (33k-40k images), what 2 CPU cores "
             "allow for 10 rows x 3 seeds x 2 datasets in about an hour: read them as a small-budget "
             "comparison. The 150-epoch builtin:digits and 100-epoch builtin:shapes tables, when present, repeat "
             "the MoCo family with five times the steps (`python benchmarks/results.py --datasets digits_long shapes_long "
             "--methods moco_v2 moco_v2_asym clim hsa scan`).\n",
             "The small-image defaults come from the ablation against lightly 1.6.0's recipes on a ResNet-18 "
             "(one setting at a time, with seed spreads): [docs/peer_quality.md](peer_quality.md).\n"]
    for dataset in (d for d in DATASETS if d in result["summary"]):
        methods = result["summary"][dataset]
        source, epochs = DATASETS[dataset]
        title = f"photo set `{source}` (benchmarks/photo_sets.py)" if source in PHOTO_SETS else source
        lines += [f"## {title}, {epochs} pre-training epochs\n",
                  "| method | " + " | ".join(names[m] for m in EVALS) + " |",
                  "|---|" + "---:|" * len(EVALS)]
        for method in METHODS:
            row = methods.get(method)
            if row is None:
                continue
            one_seed = len(row["seeds"]) == 1
            cells = [f"{row[m]['mean']:.1f}" if one_seed else f"{row[m]['mean']:.1f} ± {row[m]['std']:.1f}"
                     for m in EVALS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += below_random_section(result["summary"], names)
    lines += ordering_section(result["summary"], names)
    lines += finetune_recipe_section()
    lines += cost_section()
    lines.append(f"*Method tables {measured_where(result)}.*\n")
    return "\n".join(lines)


def below_random_section(summary: dict, names: dict) -> list[str]:
    """The self-supervised cells at or below random init's, each beside the seeded fine-tune study's
    figure for the same start where it has one (benchmarks/finetune_recipe.py)."""
    sys.path.insert(0, str(HERE))
    from finetune_recipe import load

    study: dict = {}  # (dataset, percent, start) -> top-1 of the recipe over seeds
    frozen: dict = {}  # the same for the frozen-backbone variant
    for r in load():
        if r["variant"] in ("recipe", "frozen"):
            cells = study if r["variant"] == "recipe" else frozen
            cells.setdefault((r["dataset"], r["percent"], r["start"]), []).append(r["top1"])
    below = []
    for dataset in (d for d in DATASETS if d in summary and "random" in summary[d]):
        random = summary[dataset]["random"]
        for method, row in summary[dataset].items():
            for metric in (m for m in EVALS if method not in ("random", "supervised")):
                if row[metric]["mean"] <= random[metric]["mean"]:
                    below.append(f"{dataset} {method} {names[metric]}: {row[metric]['mean']:.1f} against "
                                 f"{random[metric]['mean']:.1f}" + _seeded(study, dataset, metric, method))
    if not below:
        return []
    return ["## At or below random init\n",
            "Cells of the tables above where a self-supervised start does not beat random init, one seed each; "
            "in brackets the fine-tune study's mean ± std over seeds for the same start and label share "
            "(its own checkpoint, pre-trained with the same config; section below), against random init's:\n",
            *[f"- {cell}" for cell in below], "",
            "Where the seeded figures overlap, the single-seed cell is noise: run to run, and across machines, "
            "one seed moves a fine-tune cell by several points, as the cells with a study figure show. What is not "
            f"noise is how small the gain is: on 10% of the labels, fine-tuning from random init comes within "
            f"{_gain_range(study)} points of the study's pre-trained starts{_frozen_clause(study, frozen)}. The "
            "ResNet-18 figures for the same fine-tune are in [docs/peer_quality.md](peer_quality.md).\n"]


def _frozen_clause(study: dict, frozen: dict) -> str:
    """', and with the backbone frozen ...': the study's frozen rows against the same start's recipe."""
    pairs = [f"{d} {start} {statistics.mean(tops):.1f} against {statistics.mean(study[d, p, start]):.1f}"
             for (d, p, start), tops in sorted(frozen.items()) if p == 10 and (d, p, start) in study]
    return f"; the study's `frozen` rows (backbone lr 0) against its recipe: {', '.join(pairs)}" if pairs else ""


def _gain_range(study: dict) -> str:
    """'lo to hi': the study's 10%-label gains of pre-trained starts over random init (difference of means)."""
    gains = [statistics.mean(tops) - statistics.mean(study[d, p, "random"]) for (d, p, start), tops in study.items()
             if p == 10 and start != "random" and (d, p, "random") in study]
    return f"{min(gains):+.1f} to {max(gains):+.1f}"


def _seeded(study: dict, dataset: str, metric: str, method: str) -> str:
    """' (study: start m ± s against random m ± s)' for a fine-tune cell the study measured, else ''."""
    percent = {"finetune_1": 1, "finetune_10": 10}.get(metric)
    tops, base = study.get((dataset, percent, method)), study.get((dataset, percent, "random"))
    if not tops or not base:
        return ""
    return f" (study: {_mean_std(tops)} against {_mean_std(base)})"


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def ordering_section(summary: dict, names: dict) -> list[str]:
    """The claim under test: CLIM and CsMl/HSA above MoCo v2 in kNN and 10%-label fine-tuning at equal epochs."""
    rows = []
    for dataset in (d for d in DATASETS if d in summary):
        methods = summary[dataset]
        for method in ("clim", "hsa", "scan"):
            if method not in methods:
                continue
            cells = []
            for metric in ("knn", "finetune_10"):
                for base in ("moco_v2", "moco_v2_asym"):
                    if base not in methods:
                        cells.append("–")
                        continue
                    a, b = methods[method][metric], methods[base][metric]
                    diff = a["mean"] - b["mean"]
                    seeded = min(len(methods[method]["seeds"]), len(methods[base]["seeds"])) > 1
                    clear = seeded and abs(diff) > max(a["std"], b["std"])  # one seed has no spread to beat
                    cells.append(f"{diff:+.1f}" + (" (clear)" if clear else ""))
            purity = methods[method].get("positive_purity")
            cells.append(f"{purity['mean']:.0f}" if purity else "–")
            rows.append(f"| {DATASETS[dataset][1]}-epoch {dataset.split('_')[0]} | {method} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    header = " | ".join(f"{names[m]} vs {base}" for m in ("knn", "finetune_10") for base in ("moco_v2", "moco_v2_asym"))
    return ["## Claimed ordering\n",
            "CLIM and CsMl/HSA against MoCo v2 (vipr's symmetric default, and as published) at equal epochs: "
            "difference of the means in points; *clear* when it exceeds the larger of the two standard deviations "
            "(never with one seed). "
            "*Same class* is the % of the final neighbour table's candidate positives that carry the anchor's "
            "class (labels CLIM and HSA never see): where it is low, neighbour positives pull different classes "
            "together. SCAN is the control for that: HSA's multi-positive loss with the neighbours filtered "
            "by label, so every positive has the anchor's class (and without HSA's mixture and stage losses, "
            "from 20 neighbours instead of HSA's 5; vipr.ssl.scan).\n",
            f"| table | method | {header} | same class (%) |", "|---|---|" + "---:|" * 5, *rows, "",
            *purity_reading(summary)]


def purity_reading(summary: dict) -> list[str]:
    """What pure positives buy: SCAN's kNN against HSA's, next to HSA's gap to MoCo v2 (one clause per table)."""
    parts, small, base_larger = [], True, True
    for dataset in (d for d in DATASETS if d in summary):
        methods = summary[dataset]
        if not all(m in methods for m in ("hsa", "scan", "moco_v2", "moco_v2_asym")) \
                or not methods["hsa"].get("positive_purity"):
            continue
        knn = {m: methods[m]["knn"]["mean"] for m in ("hsa", "scan", "moco_v2", "moco_v2_asym")}
        pure, gap, to_base = knn["scan"] - knn["hsa"], knn["hsa"] - knn["moco_v2"], knn["hsa"] - knn["moco_v2_asym"]
        small = small and abs(pure) < abs(gap) / 2
        base_larger = base_larger and abs(to_base) < abs(gap) / 2  # most of the gap is moco_v2 over its asym base
        parts.append(f"{DATASETS[dataset][1]}-epoch {dataset.split('_')[0]}: raising the positives' purity from "
                     f"{methods['hsa']['positive_purity']['mean']:.0f}% (HSA) to 100% (SCAN) moves kNN by {pure:+.1f}, "
                     f"against HSA's {gap:+.1f} to moco_v2 and {to_base:+.1f} to moco_v2_asym")
    if not parts:
        return []
    if not small:
        verdict = ("In at least one table pure positives recover half or more of HSA's gap to moco_v2: there, "
                   "wrong-class neighbours are a measured part of it.")
    else:
        verdict = ("Pure positives recover under half of HSA's gap to moco_v2 in every table: wrong-class neighbours "
                   "are not what keeps the neighbour methods below it at this budget.")
        if base_larger:
            verdict += (" The larger part is the base: `moco_v2` is symmetric (two query passes per image, twice the "
                        "encoder passes of `moco_v2_asym`, the published MoCo v2 CLIM and HSA build on; the table's "
                        "second column).")
        verdict += (" Not measured, the likely rest: with 250-330 optimizer steps, the first third plain MoCo before "
                    "the first bank, the neighbour positives act for about 200 steps, drawn from the bank of a weakly "
                    "trained encoder.")
    return ["Purity measured: " + "; ".join(parts) + ". " + verdict + "\n"]


def finetune_recipe_section() -> list[str]:
    """The fine-tuning recipe against its alternatives, from benchmarks/finetune_recipe.py's records."""
    sys.path.insert(0, str(HERE))
    from finetune_recipe import load, section

    return section(load())


def cost_section() -> list[str]:
    """Time per epoch relative to MoCo v2, from benchmarks/method_cost.py (a quiet, sequential run)."""
    path = HERE / "results" / "method_cost.json"
    if not path.is_file():
        return []
    cost = json.loads(path.read_text())
    lines = ["## Cost per epoch\n",
             f"Measured by `python benchmarks/method_cost.py` on {cost['data']}, one process, {cost['torch_threads']} "
             "threads, nothing else running: median step time x steps per epoch, plus one feature-bank refresh "
             "divided by the epochs between refreshes.\n",
             "| method | step (ms) | bank refresh (s) | epoch (s) | vs moco_v2 | vs moco_v2_asym |",
             "|---|---:|---:|---:|---:|---:|"]
    asym = cost["methods"]["moco_v2_asym"]["epoch_seconds"]
    for method, c in cost["methods"].items():
        refresh = f"{c['refresh_seconds']:.2f} every {c['refresh_every']}" if c["refresh_seconds"] else "–"
        lines.append(f"| {method} | {1000 * c['step_seconds']:.0f} | {refresh} | {c['epoch_seconds']:.2f} | "
                     f"{c['vs_moco_v2']:.2f}x | {c['epoch_seconds'] / asym:.2f}x |")
    lines.append(f"\n*Measured {cost['date']} on {cost['cpu']} ({cost['cores']} cores), torch {cost['torch']}.*\n")
    return lines


def measure_cost() -> None:
    """Run benchmarks/method_cost.py (sequential, 2 threads) and keep its JSON line for the cost table."""
    import subprocess

    done = subprocess.run([sys.executable, str(HERE / "method_cost.py")], capture_output=True, text=True, check=True)
    (HERE / "results" / "method_cost.json").write_text(done.stdout.strip().splitlines()[-1] + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="parallel single-thread jobs (default 2)")
    parser.add_argument("--work-dir", default="runs/results", help="per-job runs and cached results")
    parser.add_argument("--render-only", action="store_true", help="re-render docs/results.md from the JSON")
    parser.add_argument("--reevaluate", action="store_true", help="evaluate cached checkpoints again, no pre-training")
    parser.add_argument("--no-cost", action="store_true",
                        help="keep benchmarks/results/method_cost.json instead of measuring the cost table again")
    args = parser.parse_args()
    if args.render_only:
        result = json.loads(RESULTS.read_text())
        result["summary"] = summarise(result["records"])
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
        DOCS.write_text(render(result))
        return
    sys.path.insert(0, str(HERE))
    from benchmarks_common import machine_info

    machine = machine_info()
    measured = f"{machine['cpu']}, {machine['date']}"
    jobs = [(d, m, s) for s in args.seeds for d in args.datasets for m in args.methods]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_job, *job, args.work_dir, args.reevaluate, measured) for job in jobs]
        for future in as_completed(futures):
            print(json.dumps(future.result()), flush=True)
    if not args.no_cost:  # after the workers: the cost table needs a quiet machine
        measure_cost()
    # the table covers every cached job, so slices run one after another add up
    records = [json.loads(p.read_text()) for p in sorted(Path(args.work_dir).glob("*/*/seed*/result.json"))]
    before = json.loads(RESULTS.read_text())["machine"] if RESULTS.is_file() else machine
    for record in records:  # cached before records named their machine: the last table's
        record["measured"] = record.get("measured") or f"{before['cpu']}, {before['date']}"
    result = {"benchmark": "results", "machine": machine, "workers": args.workers,
              "seeds": sorted({r["seed"] for r in records}), "records": records, "summary": summarise(records)}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    DOCS.write_text(render(result))
    print(json.dumps({"benchmark": "results", "summary": result["summary"]}))


if __name__ == "__main__":
    main()
