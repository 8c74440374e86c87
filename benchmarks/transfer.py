"""Does pre-training help downstream, and does the claimed ordering hold? Transfer to detection and segmentation.

For each set, backbones (ResNet-18, small stem) are pre-trained once on its classification data
(supervised on all labels, moco_v2, hsa, scan with a 10% label split; ``random`` is no
pre-training), then fine-tuned through ``vipr transfer`` on its dense data, 3 seeds each:

- ``instance`` (Mask R-CNN, slim FPN 64 / heads 256, the CLI defaults), backbone fine-tuned and
  frozen (``--trainable-stages 0``): box AP, AP50, mask AP;
- ``segment`` (FCN), backbone fine-tuned and frozen: mIoU.

Sets: ``scenes`` (builtin:shapes -> builtin:scenes, 64 px, 3 classes, up to 3 objects) and
``digits`` (builtin:digits -> scikit-learn digits on textured backgrounds, written as COCO by
benchmarks/digit_scenes.py and read by the coco: loader; test scenes use digits no train
scene holds). Budgets (2-core CPU): pre-training 6 epochs at 32 px, batch 128; fine-tuning 200
steps of batch 4 at 64 px (a random-init Mask R-CNN reaches box AP ~5 there at 300 steps).

Every run is a subprocess pinned to one core (``--jobs 2`` runs two side by side, one thread
each); each result is one JSON line appended to ``--results`` (default
benchmarks/results/transfer.jsonl), and a run already there is skipped, so the script resumes.
The last line printed is one JSON summary. docs/transfer.md is rendered from the records by
benchmarks/render_transfer.py.

Usage: PYTHONPATH=src python benchmarks/transfer.py [--jobs 2] [--sets scenes,digits] [--seeds 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from digit_scenes import write_digit_scenes  # noqa: E402

RESULTS = HERE / "results"
INITS = ("random", "supervised", "moco_v2", "hsa", "scan")
MODES = {"finetuned": [], "frozen": ["--trainable-stages", "0"]}
TASKS = ("instance", "segment")
PRETRAIN = ["--backbone", "resnet18", "--epochs", "6", "--batch-size", "128"]
METHOD_SETTINGS = {  # the queue below the ~1,500-2,000 train images; the neighbour step from epoch 3 of 6
    "moco_v2": ["method.queue_size=1024"],
    "hsa": ["method.queue_size=1024", "method.warmup_epochs=2", "method.refresh_every=2"],
    "scan": ["method.queue_size=1024", "method.warmup_epochs=2", "method.refresh_every=2"],
    "supervised": [],
}
SETS = {
    "scenes": {"pretrain": "builtin:shapes?train=2000&test=500",
               "transfer": "builtin:scenes?size=64&train=200&test=50&classes=3&objects=3"},
    "digits": {"pretrain": "builtin:digits", "transfer": None},  # coco: tree written on first use
}


def vipr(args: list[str], core: int, log: Path) -> dict:
    """Run ``vipr ARGS --json`` on one core, one thread; its last stdout line as a dict."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIPR_TRACKING": "0"}
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "vipr.cli.main", *args, "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}); see {log}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": round(time.perf_counter() - start, 1)}


def pretrained(name: str, init: str, work: Path, core: int) -> str:
    """The checkpoint argument of ``init`` for set ``name``: "random", or a pre-training run (made once)."""
    if init == "random":
        return "random"
    out = work / name / f"pre-{init}"
    if (out / "metrics.json").is_file():
        return str(out)
    source, settings = SETS[name]["pretrain"], list(METHOD_SETTINGS[init])
    if init == "scan":
        split = work / name / "labels-10pct.json"
        subprocess.run([sys.executable, "-m", "vipr.cli.main", "data", "split", source, "--label-fraction", "0.1",
                        "--out", str(split), "--no-progress"], check=True, capture_output=True)
        settings.append(f"method.label_split={split}")
    args = ["pretrain", "--data", source, "--method", init, "--out", str(out), "--no-track", "--no-progress",
            *PRETRAIN, "--set", "train.num_threads=1", *settings]
    if out.exists():
        args.append("--resume")
    vipr(args, core, work / name / f"pre-{init}.log")
    return str(out)


def transfer_run(job: dict, work: Path, core: int) -> dict:
    """One fine-tuning run of ``job`` (set, init, mode, task, seed); its record."""
    name, init, mode, task, seed = (job[k] for k in ("set", "init", "mode", "task", "seed"))
    checkpoint = pretrained(name, init, work, core)
    out = work / name / f"{task}-{init}-{mode}-s{seed}"
    args = ["transfer", task, "--checkpoint", checkpoint, "--data", SETS[name]["transfer"], "--out", str(out),
            "--iters", str(job["iters"]), "--seed", str(seed), "--no-track", "--no-progress", *MODES[mode],
            "--set", "train.num_threads=1", "train.checkpoint_every=0"]
    if checkpoint == "random":
        args += ["--backbone", "resnet18"]
    if (out / "checkpoint.pt").is_file():
        args.append("--resume")
    metrics = vipr(args, core, work / name / f"{out.name}.log")
    keep = ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "voc_mAP50", "mIoU", "pixel_acc", "seconds")
    return {**job, **{k: metrics.get(k) for k in keep}, "date": datetime.date.today().isoformat()}


def jobs(sets: list[str], seeds: list[int], iters: int) -> list[dict]:
    """Seed by seed over everything: a run cut short still has whole tables of its first seeds."""
    return [{"set": s, "init": i, "mode": m, "task": t, "seed": seed, "iters": iters}
            for seed in seeds for s in sets for i in INITS for t in TASKS for m in MODES]


def on_a_free_core(cores: queue.Queue, fn, *args):
    """``fn(*args, core)`` on a core no other run holds (one run per core: two torch jobs on one core crawl)."""
    core = cores.get()
    try:
        return fn(*args, core)
    finally:
        cores.put(core)


def run_all(todo: list[dict], work: Path, results: Path, workers: int) -> None:
    """Pre-train first, then every transfer run, ``workers`` side by side; each record appended as it finishes."""
    pre = sorted({(j["set"], j["init"]) for j in todo if j["init"] != "random"})
    cores: queue.Queue = queue.Queue()
    for core in range(workers):
        cores.put(core)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda key: on_a_free_core(cores, pretrained, *key, work), pre))
        done = pool.map(lambda job: on_a_free_core(cores, transfer_run, job, work), todo)
        for record in done:
            with results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one core each (default 2)")
    parser.add_argument("--sets", default="scenes,digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iters", type=int, default=200, help="fine-tuning steps per run (default 200)")
    parser.add_argument("--quick", action="store_true", help="scenes, seed 0, 1 pre-training epoch, 20 steps: a smoke run")
    parser.add_argument("--results", type=Path, default=RESULTS / "transfer.jsonl")
    parser.add_argument("--work", type=Path, default=RESULTS / "transfer-runs", help="run folders (resumable)")
    args = parser.parse_args()
    sets, seeds, iters = (["scenes"], [0], 20) if args.quick else (args.sets.split(","),
                                                                    [int(s) for s in args.seeds.split(",")], args.iters)
    if args.quick:
        PRETRAIN[PRETRAIN.index("--epochs") + 1] = "1"
    if "digits" in sets:
        root = args.work / "digits" / "coco"
        if not (root / "annotations" / "instances_val.json").is_file():
            write_digit_scenes(root, size=64, train=200, test=50, objects=3, seed=0)
        SETS["digits"]["transfer"] = f"coco:{root}"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    seen = {json.dumps({k: r[k] for k in ("set", "init", "mode", "task", "seed", "iters")}, sort_keys=True)
            for r in map(json.loads, args.results.read_text().splitlines())} if args.results.is_file() else set()
    todo = [j for j in jobs(sets, seeds, iters) if json.dumps(j, sort_keys=True) not in seen]
    start = time.perf_counter()
    run_all(todo, args.work, args.results, args.jobs)
    print(json.dumps({"benchmark": "transfer", "runs": len(todo), "results": str(args.results),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
