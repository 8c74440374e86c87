"""docs/slimming.md from the slimming records (slimming.py) and, when present, the quantization line.

    python benchmarks/render_slimming.py

Reads benchmarks/results/slimming.jsonl (one record per trained or random backbone, with its
kNN, linear and 10%-label fine-tune top-1) and benchmarks/results/quantize.json
(benchmarks/quantize.py: float against int8 ONNX, top-1 and batch-16 throughput).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "slimming.md"
METRICS = (("knn", "kNN"), ("linear", "linear"), ("finetune_10", "fine-tune 10%"))
METHODS = ("seed", "bingo", "moco_v2")
NAMES = {"seed": "SEED distilled", "bingo": "BINGO distilled", "moco_v2": "own moco_v2 (equal epochs)",
         "random": "random init (floor)"}
STUDENTS = {"resnet18": "ResNet-18", "timm:mobilenetv3_large_100": "MobileNetV3-Large", "darts_net": "darts_net (DARTS_V2)",
            "resnet34": "ResNet-34"}
SOURCES = {"digits": "builtin:digits", "shapes": "builtin:shapes (1,000 / 300)", "photos": "photos (real photographs)"}
QUEUE = 512  # moco_v2 method.queue_size in slimming.py
VERDICT_METRIC = "linear"  # the figure the published results report (ImageNet linear top-1)


def pick(records: list[dict], **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def stats(rows: list[dict], metric: str) -> tuple[float, float, int] | None:
    vals = [r[metric] for r in rows if r.get(metric) is not None]
    if not vals:
        return None
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def cell(rows: list[dict], metric: str, seeds: int) -> str:
    """mean ± std over the seeds run; ``(n)`` when fewer than the table's ``seeds`` are in."""
    s = stats(rows, metric)
    if s is None:
        return "-"
    text = f"{s[0]:.1f}" if s[2] == 1 else f"{s[0]:.1f} ± {s[1]:.1f}"
    return text if s[2] == seeds else f"{text} ({s[2]})"


def seconds(rows: list[dict]) -> str:
    vals = [r["train_seconds"] for r in rows if r.get("train_seconds")]
    return f"{statistics.mean(vals):.0f}" if vals else "-"


def bounds_table(records: list[dict], sources: list[str]) -> list[str]:
    out = ["## Ceiling and floor", "",
           ("The teacher (ResNet-34, moco_v2, twice the students' epochs) is what distillation can pass on; the "
           "random-init ResNet-18 is what the students must beat."), "",
           "| source | backbone | " + " | ".join(h for _, h in METRICS) + " | train s |", "|---" * 6 + "|"]
    for source in sources:
        for role, backbone, label in (("teacher", "resnet34", "ResNet-34 teacher"),
                                      ("floor", "resnet34", "ResNet-34 random init"),
                                      ("floor", "resnet18", "ResNet-18 random init")):
            rows = pick(records, source=source, role=role, backbone=backbone)
            if rows:
                out.append(f"| {source} | {label} | " + " | ".join(cell(rows, m, 1) for m, _ in METRICS)
                           + f" | {seconds(rows)} |")
    return out + [""]


def student_table(records: list[dict], source: str, backbone: str) -> list[str]:
    rows = pick(records, source=source, role="student", backbone=backbone)
    seeds = len({r["seed"] for r in rows})
    out = [f"### {SOURCES.get(source, source)}: {STUDENTS.get(backbone, backbone)} ({seeds} seed{'s' * (seeds > 1)})",
           "", "| student | " + " | ".join(h for _, h in METRICS) + " | train s | epochs |", "|---" * 6 + "|"]
    for method in (*METHODS, "random"):
        sub = pick(rows, method=method) or pick(records, source=source, role="floor", backbone=backbone, method=method)
        if sub:
            epochs = sub[0]["epochs"] if method != "random" else "-"
            out.append(f"| {NAMES[method]} | " + " | ".join(cell(sub, m, seeds if method != 'random' else 1)
                                                          for m, _ in METRICS) + f" | {seconds(sub)} | {epochs} |")
    wall = pick(records, source=source, role="wallclock", backbone=backbone)
    for r in wall:
        out.append(f"| own moco_v2, equal wall-clock (seed {r['seed']}) | "
                   + " | ".join(cell([r], m, 1) for m, _ in METRICS) + f" | {seconds([r])} | {r['epochs']} |")
    return out + [""]


def verdict(records: list[dict], source: str, backbone: str = "resnet18") -> tuple[bool | None, str]:
    """Whether the best distilled student beats own moco_v2 by more than the larger std, on VERDICT_METRIC."""
    rows = pick(records, source=source, role="student", backbone=backbone)
    own = stats(pick(rows, method="moco_v2"), VERDICT_METRIC)
    distilled = {m: stats(pick(rows, method=m), VERDICT_METRIC) for m in ("seed", "bingo")}
    distilled = {m: s for m, s in distilled.items() if s}
    if own is None or not distilled:
        return None, f"- {source}: not all runs in yet"
    best = max(distilled, key=lambda m: distilled[m][0])
    gap, spread = distilled[best][0] - own[0], max(distilled[best][1], own[1])
    n = min(distilled[best][2], own[2])
    if n < 2:
        return None, f"- {source}: best distilled ({best}) {gap:+.1f} against own moco_v2, one seed so far: no verdict"
    paid = gap > spread
    word = "pays" if paid else "does not pay"
    return paid, (f"- {source}: distillation {word}: best distilled ({best}) {distilled[best][0]:.1f} against own "
                  f"moco_v2 {own[0]:.1f}, gap {gap:+.1f} against the larger std {spread:.1f} ({n} seeds)")


def verdict_section(records: list[dict], sources: list[str]) -> list[str]:
    results = [verdict(records, s) for s in sources]
    paid = sum(bool(p) for p, _ in results)
    decided = sum(p is not None for p, _ in results)
    met = paid >= 2
    out = ["## Does distillation pay?", "",
           ("Target: on at least two of the three sources, the best distilled ResNet-18 beats its own moco_v2 at "
           f"equal epochs by more than the larger seed std, on the {VERDICT_METRIC} probe (the figure SEED, BINGO "
           "and CompRess report)."), "", *[line for _, line in results], "",
           f"**{'Met' if met else 'Not met'}**: distillation pays on {paid} of {decided} sources decided "
           f"({len(sources)} run)." + ("" if met else " Why, measured, is in \"What the teacher has to give\": at this budget the teacher is below the random-init floor."),
           ""]
    return out


def gaps_section(records: list[dict], sources: list[str]) -> list[str]:
    """Every metric's gap of each distillation over own moco_v2 (ResNet-18), beside the published ones."""
    out = ["## Against the published direction", "",
           ("Published (ImageNet, ResNet-50 teacher, ResNet-18 student, linear top-1): own MoCo v2 52.5, SEED 57.6 "
           "(+5.1), BINGO 61.4 (+8.9), CompRess 61.7-62.6 (+9.2 to +10.1). Here (ResNet-34 teacher; mean gap over "
           "the seeds, points):"), "", "| source | method | " + " | ".join(f"{h} gap" for _, h in METRICS) + " |",
           "|---" * 5 + "|"]
    for source in sources:
        own = pick(records, source=source, role="student", backbone="resnet18", method="moco_v2")
        for method in ("seed", "bingo"):
            dist = pick(records, source=source, role="student", backbone="resnet18", method=method)
            cells = []
            for metric, _ in METRICS:
                a, b = stats(dist, metric), stats(own, metric)
                cells.append(f"{a[0] - b[0]:+.1f}" if a and b else "-")
            out.append(f"| {source} | {method} | " + " | ".join(cells) + " |")
    return out + [""]


def diagnosis_section(records: list[dict], sources: list[str]) -> list[str]:
    """Measured reasons: how far the teacher stands above the floor and the student, and what moco_v2 learnt."""
    out = ["## What the teacher has to give", "",
           ("A student can only gain what the teacher knows beyond what it learns alone. Per source: the teacher's "
           "linear and kNN top-1 minus the random-init ResNet-18's and minus the own-moco_v2 ResNet-18's (points); "
           "the teacher's last-epoch moco_v2 loss against ln(1 + queue), the value of a query that cannot tell its "
           "key from the 512 queued ones; and the mean cosine between the pooled features of two different test "
           "images (random init, teacher, students; 1 would be one feature for every image)."), "",
           ("| source | teacher − floor, linear / kNN | teacher − own moco_v2, linear / kNN | teacher loss, last epoch "
           "(chance) | cosine: floor / teacher / SEED / BINGO / own moco_v2 |"), "|---" * 5 + "|"]
    for source in sources:
        teacher = pick(records, source=source, role="teacher")
        floor = pick(records, source=source, role="floor", backbone="resnet18")
        rows = {m: pick(records, source=source, role="student", backbone="resnet18", method=m) for m in METHODS}
        cells = [" / ".join(_gap(teacher, other, m) for m in ("linear", "knn")) for other in (floor, rows["moco_v2"])]
        loss = f"{teacher[0]['loss'][-1]:.2f} ({math.log(1 + QUEUE):.2f})" if teacher else "-"
        cosine = " / ".join(_mean(r, "feature_cosine", 2) for r in (floor, teacher, *rows.values()))
        out.append(f"| {source} | " + " | ".join([*cells, loss, cosine]) + " |")
    out += ["", "Loss per epoch, seed 0 (SEED and BINGO: distillation losses; moco_v2: InfoNCE over 513 keys):", "",
            "| source | teacher (moco_v2) | SEED | BINGO | own moco_v2 |", "|---" * 5 + "|"]
    for source in sources:
        curves = [pick(records, source=source, role="teacher")]
        curves += [pick(records, source=source, role="student", backbone="resnet18", method=m, seed=0)
                   for m in METHODS]
        out.append(f"| {source} | " + " | ".join(" → ".join(f"{x:.2f}" for x in r[0]["loss"]) if r else "-"
                                                 for r in curves) + " |")
    return out + [""]


def _gap(a: list[dict], b: list[dict], metric: str) -> str:
    sa, sb = stats(a, metric), stats(b, metric)
    return f"{sa[0] - sb[0]:+.1f}" if sa and sb else "-"


def _mean(rows: list[dict], metric: str, digits: int = 1) -> str:
    s = stats(rows, metric)
    return f"{s[0]:.{digits}f}" if s else "-"


def quantize_section() -> list[str]:
    """One row per (machine, resolution) of benchmarks/results/quantize*.json: the latest run first."""
    paths = sorted(RESULTS.glob("quantize*.json"), key=lambda p: p.name != "quantize.json")
    out = ["## Quantization", ""]
    if not paths:
        return out + ["Float against int8 ONNX: not measured yet (`python benchmarks/quantize.py` writes "
                      "benchmarks/results/quantize.json).", ""]
    out += ["ResNet-18 classifier (a linear probe on builtin:digits at 32 px; random weights at 224 px, where top-1 "
            "is agreement only), float ONNX against `vipr model export --quantize int8`, both run in one process, "
            "interleaved call by call, median of timed calls after warm-up. Targets: at most 1 point of top-1 lost, "
            "at least 1.5x batch-16 throughput.", "",
            "| machine (date) | px | int8 weights | top-1 float | top-1 int8 | delta | b16 float img/s | "
            "b16 int8 img/s | **b16 speedup** | b1 float ms | b1 int8 ms | file MB float / int8 |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for path in paths:
        run = json.loads(path.read_text())
        threads = f"{run['threads']} ORT thread" if run.get("threads") else "ORT default threads"
        for key in ("at_32px", "at_224px"):
            r = run.get(key)
            if not r:
                continue
            acc, b16, b1, size = r["accuracy"], r["batch16"], r["batch1"], r["file_bytes"]
            features = ", ".join(run["cpu_features"]) if "cpu_features" in run else "instruction sets not recorded"
            out.append(f"| {run['cpu']} ({features}), {run['cores']} cores, {threads} ({run['date']}) | {r['image_size']} | "
                       f"{r['weights']} | {acc['float']:.1f} | {acc['int8']:.1f} | {acc['delta']:+.1f} | "
                       f"{b16['float_images_per_s']:.0f} | {b16['int8_images_per_s']:.0f} | **{b16['speedup']:.2f}x** | "
                       f"{b1['float_ms']:.1f} | {b1['int8_ms']:.1f} | {size['float'] / 1e6:.1f} / {size['int8'] / 1e6:.1f} |")
    out += ["", "int8 weights come first; where they cost more than a point (ONNX Runtime's AVX2 kernel without VNNI "
            "saturates their products), the export measures uint8 weights and keeps them.", ""]
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def render() -> str:
    path = RESULTS / "slimming.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    dates = sorted({r["date"] for r in records})
    machine = next((r["machine"] for r in records if r.get("machine")), {})
    sources = [s for s in SOURCES if pick(records, source=s)]
    seeds = sorted({r["seed"] for r in records if r["role"] == "student" and r["backbone"] == "resnet18"})
    lines = ["# Model slimming: distillation against a student's own pre-training", "",
             ("Generated by `python benchmarks/render_slimming.py` from the records of `python benchmarks/slimming.py` "
             f"(runs dated {', '.join(dates) or 'none yet'}; {machine.get('cpu', '?')}, one core of "
             f"{machine.get('cores', '?')}, one thread, torch {machine.get('torch', '?')}; seeds "
             f"{', '.join(map(str, seeds)) or '-'}). Top-1 in % on the test split, mean ± std over seeds; "
             "train s is the wall-clock of the training subprocess."), ""]
    lines += PROTOCOL + verdict_section(records, sources) + bounds_table(records, sources)
    lines += ["## Students", ""]
    for source in sources:
        for backbone in STUDENTS:
            if backbone != "resnet34" and pick(records, source=source, role="student", backbone=backbone):
                lines += student_table(records, source, backbone)
    lines += gaps_section(records, sources) + diagnosis_section(records, sources)
    return "\n".join(lines + quantize_section()) + "\n"


PROTOCOL = [
    "## Protocol", "",
    ("- Teacher: ResNet-34 (ResNet-50 does not fit the budget: one core gives a small-stem ResNet-34 2.7 images/s "
    "of moco_v2 at 32 px), pre-trained with `vipr pretrain --method moco_v2` for 6 epochs on each source, once."),
    ("- Students, each trained three ways for 3 epochs: `vipr distill --method seed` and `--method bingo` from the "
    "teacher, and `vipr pretrain --method moco_v2` on its own (the baseline at equal epochs). ResNet-18 is the "
    "core grid (3 seeds, every source); MobileNetV3-Large (`timm:mobilenetv3_large_100`) and `darts_net` with the "
    "DARTS_V2 cell (found by DARTS's search on CIFAR-10, arXiv 1806.09055; C 16, 8 cells) get seed 0 on digits: "
    "a genotype searched here could be distilled into (`--student GENOTYPE.json`) but not pre-trained on its own "
    "(`vipr pretrain` builds no genotype), so the equal comparison uses a cell both commands build."),
    ("- Equal wall-clock: one more own-moco_v2 ResNet-18 (digits, seed 0) trained for as many epochs as the slower "
    "distillation's seconds buy."),
    ("- Common settings: 32 px, the ImageNet stem (`model.small_stem=false`: stride 4 before stage 1; the small stem "
    "costs 16x the compute and made one teacher epoch take 513 s), batch 128, lr 0.12 per 256, moco_v2 queue 512 "
    "(below the 1,000-1,437 train images), SEED and BINGO with their defaults (teacher queue capped at a quarter "
    "of the train split)."),
    ("- Scores: kNN (k 200, T 0.07) and the linear probe on frozen features fitted on the whole train split; "
    "fine-tune 10%: the whole network on a seeded 10% label split (`vipr data split` rule), 40 steps of batch 64 "
    "(`vipr eval finetune --min-steps 40`; its default is 500, which the budget does not allow for 40 backbones)."),
    ("- Sources: builtin:digits (8x8 scans of handwritten digits, 10 classes, 1,437 / 360), builtin:shapes reduced "
    "to 1,000 train / 300 test, and the photo development set (real photographs: 11 photos from scikit-image and "
    "scikit-learn, 32 px patches, train from the left 70% of each photo, test from the right 30%, 1,100 / 440; "
    "regenerated by benchmarks/photo_sets.py)."),
    ("- Budget: everything on one core, one thread, about 100 minutes. Every run is a subprocess; the records "
    "hold each run's wall-clock, loss per epoch and throughput."), ""]


def main() -> None:
    DOCS.write_text(render())
    print(DOCS)


if __name__ == "__main__":
    main()
