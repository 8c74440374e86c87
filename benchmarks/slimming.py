"""Does distillation pay? Small students distilled from a moco_v2 teacher against their own moco_v2.

Per source, a ResNet-34 teacher is pre-trained with moco_v2 once (twice the students' epochs;
ResNet-50 does not fit one CPU core's budget), then each student is trained three ways at equal
epochs: ``vipr distill --method seed``, ``--method bingo`` and ``vipr pretrain --method moco_v2``
on its own. Every backbone (teacher, students, a random-init student as the floor) is scored by
kNN (k 200), the linear probe and a 10%-label fine-tune on the test split. Students: ResNet-18
(the core grid: 3 seeds, every source), then timm's MobileNetV3-Large and ``darts_net`` (the
DARTS_V2 cell that DARTS's search found on CIFAR-10, arXiv 1806.09055; C 16, 8 cells), seed 0 on
digits: the same cell for the distilled and the own-moco_v2 student, which a genotype found by a
search here would not give (``vipr pretrain`` builds no genotype). One more own-moco_v2
ResNet-18 run gets as many seconds of training as the slower distillation took (more epochs):
the equal-wall-clock figure.

Sources: builtin:digits, builtin:shapes (1,000 train / 300 test) and the photo development set
(real photographs; benchmarks/photo_sets.py regenerates it). Budgets (one CPU core, one thread,
about 100 minutes for everything): 32 px with the ImageNet stem (stride 4 before stage 1: the
small stem made one ResNet-34 epoch of digits take 513 s), batch 128, students 3 epochs,
teacher 6; fine-tune 40 steps of batch 64 on the 10% split.

Every run is a subprocess on one core; each backbone's result is one JSON line appended to
``--results`` (default benchmarks/results/slimming.jsonl); a backbone already there is skipped,
so the script resumes. The last line printed is one JSON summary. docs/slimming.md is rendered
from the records by benchmarks/render_slimming.py.

Usage: python benchmarks/slimming.py [--core 0] [--sources digits,shapes,photos] [--seeds 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
IMAGE_SIZE, BATCH = 32, 128
EPOCHS = {"student": 3, "teacher": 6}
TEACHER = "resnet34"
FINETUNE_STEPS = 40  # steps of batch 64 on the 10% split: ~20 s for a ResNet-18 here
COMMON = ["--batch-size", str(BATCH), "--image-size", str(IMAGE_SIZE), "--no-track", "--no-progress"]
SETTINGS = ["train.num_threads=1", "train.checkpoint_every=0", "model.small_stem=false"]
MOCO = ["method.queue_size=512"]  # below the 1,000-1,437 train images of every source
BINGO = ["method.warmup_epochs=1"]  # its default 11 (the release's) would leave 3 epochs without the bag
SOURCES = {"digits": "builtin:digits", "shapes": "builtin:shapes?train=1000&test=300", "photos": None}
EXTRA_STUDENTS = ("timm:mobilenetv3_large_100", "darts_net")


def source_of(name: str) -> str:
    if SOURCES[name] is None:
        from photo_sets import build

        SOURCES[name] = str(build("photos"))
    return SOURCES[name]


def on_core(cmd: list[str], core: int, log: Path) -> tuple[dict, float]:
    """``cmd`` on one core, one thread; its last stdout line as a dict, and its wall-clock seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIPR_TRACKING": "0", "PYTHONPATH": str(HERE.parent / "src")}
    start = time.perf_counter()
    done = subprocess.run(["taskset", "-c", str(core), *cmd], check=False, capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({done.returncode}); see {log}")
    return json.loads(done.stdout.strip().splitlines()[-1]), round(time.perf_counter() - start, 1)


def vipr(args: list[str], core: int, log: Path) -> tuple[dict, float]:
    return on_core([sys.executable, "-m", "vipr.cli.main", *args, "--json"], core, log)


def train(job: dict, work: Path, core: int) -> dict:
    """Train ``job``'s backbone (skipped for random); its folder, seconds and loss curve."""
    folder = work / job["source"] / run_name(job)
    if job["method"] == "random":
        return {"checkpoint": "random"}
    if (folder / "metrics.json").is_file() and (folder / "train.json").is_file():  # trained by an earlier, cut run
        return {"checkpoint": str(folder), **json.loads((folder / "train.json").read_text())}
    data, epochs, seed = source_of(job["source"]), str(job["epochs"]), str(job["seed"])
    if job["method"] == "moco_v2":
        args = ["pretrain", "--method", "moco_v2", "--backbone", job["backbone"], "--set", *SETTINGS, *MOCO]
    else:
        teacher = work / job["source"] / run_name(teacher_job(job["source"]))
        args = ["distill", "--method", job["method"], "--teacher", str(teacher), "--student", job["backbone"],
                "--set", *SETTINGS, *(BINGO if job["method"] == "bingo" else [])]
    metrics, seconds = vipr([*args[:1], "--data", data, "--epochs", epochs, "--seed", seed, "--out", str(folder),
                             *COMMON, *args[1:]], core, folder.with_suffix(".log"))
    epochs_log = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if "loss_mean" in x]
    summary = {"train_seconds": seconds, "epoch_seconds": round(sum(e["epoch_seconds"] for e in epochs_log), 1),
               "loss": [round(e["loss_mean"], 3) for e in epochs_log], "images_per_s": metrics.get("images_per_s")}
    (folder / "train.json").write_text(json.dumps(summary))
    return {"checkpoint": str(folder), **summary}


def run_name(job: dict) -> str:
    return f"{job['role']}-{job['backbone'].replace(':', '_')}-{job['method']}-e{job['epochs']}-s{job['seed']}"


def teacher_job(source: str) -> dict:
    return {"role": "teacher", "source": source, "backbone": TEACHER, "method": "moco_v2",
            "epochs": EPOCHS["teacher"], "seed": 0}


def student_job(source: str, backbone: str, method: str, seed: int, role: str = "student", epochs: int = 0) -> dict:
    return {"role": role, "source": source, "backbone": backbone, "method": method,
            "epochs": epochs or EPOCHS["student"], "seed": seed}


def evaluate_in_process(checkpoint: str, source: str, backbone: str, seed: int, folder: Path) -> dict:
    """kNN, linear and 10%-label fine-tune top-1 (%) of one backbone (the --evaluate subprocess)."""
    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split, save_label_split
    from vipr.eval import features
    from vipr.eval.finetune import run_finetune
    from vipr.eval.runner import run_eval

    if checkpoint == "random":  # the students' own architecture: the ImageNet stem, not the 32 px default
        features._random_backbone = _random_imagenet_stem
    common = {"checkpoint": checkpoint, "data": source, "image_size": IMAGE_SIZE, "progress": False,
              **({"backbone": backbone} if checkpoint == "random" else {})}
    out = {}
    for kind in ("knn", "linear"):
        start = time.perf_counter()
        out[kind] = run_eval(kind, **common)["top1"]
        out[f"{kind}_seconds"] = round(time.perf_counter() - start, 1)
    split = folder / f"labels-10pct-s{seed}.json"
    folder.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(source)
    save_label_split(split, make_label_split(dataset.train.labels, label_fraction=0.1, seed=seed), dataset)
    start = time.perf_counter()
    out["finetune_10"] = run_finetune(**common, label_split=str(split), seed=seed, min_steps=FINETUNE_STEPS,
                                      epochs=1, strategy="full")["top1"]  # the students' own fine-tune
    out["finetune_seconds"] = round(time.perf_counter() - start, 1)
    out["feature_cosine"] = feature_cosine(checkpoint, backbone, dataset.test.images)
    from benchmarks_common import machine_info

    return {**out, "machine": {k: v for k, v in machine_info().items() if k in ("cpu", "cores", "torch", "python")}}


def feature_cosine(checkpoint: str, backbone: str, images) -> float:
    """Mean cosine between the L2-normalised pooled features of two different test images.

    SEED's teacher embedding here is the pooled (post-ReLU, so non-negative) backbone feature:
    when all images sit at cosine ~0.9, the teacher's positive stands out of its queue by little.
    """
    import torch.nn.functional as F

    from vipr.eval.features import extract_features, load_eval_backbone

    model, card = load_eval_backbone(checkpoint, backbone if checkpoint == "random" else None, IMAGE_SIZE)
    x = F.normalize(extract_features(model, images[:500], image_size=IMAGE_SIZE, mean=card.mean, std=card.std,
                                     device="cpu", progress=False), dim=1)
    n = len(x)
    return round(float(((x @ x.t()).sum() - n) / (n * (n - 1))), 3) if n > 1 else float("nan")


def _random_imagenet_stem(name, image_size):
    import torch

    from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from vipr.engine.card import make_card
    from vipr.models.backbones import create_backbone

    kwargs = {} if name.startswith("timm:") or name == "darts_net" else {"small_stem": False}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_backbone(name, **kwargs)
    return model, make_card(architecture=name, architecture_kwargs=kwargs, image_size=image_size,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, method="random")


def run_job(job: dict, work: Path, core: int) -> dict:
    trained = train(job, work, core)
    folder = work / job["source"] / run_name(job)
    scores, seconds = on_core([sys.executable, __file__, "--evaluate", trained["checkpoint"], source_of(job["source"]),
                               job["backbone"], str(job["seed"]), str(folder)], core, folder.with_suffix(".eval.log"))
    trained.pop("checkpoint")
    return {**job, **trained, **scores, "eval_seconds": seconds, "date": datetime.date.today().isoformat()}


def key(job: dict) -> str:
    return json.dumps({k: job[k] for k in ("role", "source", "backbone", "method", "epochs", "seed")}, sort_keys=True)


def core_grid(sources: list[str], seeds: list[int]) -> list[dict]:
    """Teachers and floors first, then ResNet-18 seed by seed (a cut run has whole seeds)."""
    jobs = [teacher_job(s) for s in sources] + [student_job(s, "resnet18", "random", 0, "floor") for s in sources]
    jobs += [student_job(s, "resnet18", m, seed) for seed in seeds for s in sources
             for m in ("seed", "bingo", "moco_v2")]
    return jobs + [student_job(s, TEACHER, "random", 0, "floor") for s in sources]  # is the teacher trained at all?


def later_jobs(records: list[dict], seeds: list[int]) -> list[dict]:
    """Equal wall-clock own moco_v2 (ResNet-18, digits, seed 0), then the other students on digits, seed 0."""
    jobs = []
    for seed in seeds[:1]:
        runs = {r["method"]: r for r in records if r["role"] == "student" and r["backbone"] == "resnet18"
                and r["source"] == "digits" and r["seed"] == seed}
        if {"seed", "bingo", "moco_v2"} <= set(runs):
            budget = max(runs["seed"]["epoch_seconds"], runs["bingo"]["epoch_seconds"])
            per_epoch = runs["moco_v2"]["epoch_seconds"] / runs["moco_v2"]["epochs"]
            jobs.append(student_job("digits", "resnet18", "moco_v2", seed, "wallclock", math.ceil(budget / per_epoch)))
    for backbone in EXTRA_STUDENTS:
        jobs.append(student_job("digits", backbone, "random", 0, "floor"))
        jobs += [student_job("digits", backbone, m, 0) for m in ("seed", "bingo", "moco_v2")]
    return jobs


def run_all(todo_fn, results: Path, work: Path, core: int) -> int:
    ran = 0
    records = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
    for job in todo_fn(records):
        if key(job) in {key(r) for r in records}:
            continue
        try:
            record = run_job(job, work, core)
        except RuntimeError as err:  # one failed run leaves the others' records
            print(json.dumps({**job, "error": str(err)[:300]}), file=sys.stderr, flush=True)
            continue
        records.append(record)
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), file=sys.stderr, flush=True)
        ran += 1
    return ran


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--evaluate":
        checkpoint, source, backbone, seed, folder = sys.argv[2:7]
        print(json.dumps(evaluate_in_process(checkpoint, source, backbone, int(seed), Path(folder))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=int, default=0, help="the CPU core every run is pinned to (default 0)")
    parser.add_argument("--sources", default="digits,shapes,photos")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-extra", action="store_true", help="the ResNet-18 core grid only")
    parser.add_argument("--quick", action="store_true", help="digits, seed 0, 1 epoch (teacher 2): a smoke run")
    parser.add_argument("--results", type=Path, default=RESULTS / "slimming.jsonl")
    parser.add_argument("--work", type=Path, default=HERE.parent / "runs" / "slimming", help="run folders (resumable)")
    args = parser.parse_args()
    sources, seeds = args.sources.split(","), [int(s) for s in args.seeds.split(",")]
    if args.quick:
        sources, seeds = ["digits"], [0]
        EPOCHS.update(student=1, teacher=2)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ran = run_all(lambda records: core_grid(sources, seeds), args.results, args.work, args.core)
    if not args.no_extra:
        ran += run_all(lambda records: later_jobs(records, seeds), args.results, args.work, args.core)
    print(json.dumps({"benchmark": "slimming", "runs": ran, "results": str(args.results),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
