"""vipr's pre-training against lightly 1.6.0's benchmark recipes, side by side in one run.

    python benchmarks/peer_quality.py                                  # the whole grid, then docs/peer_quality.md
    python benchmarks/peer_quality.py --sources photos --methods moco_v2 --runners vipr \
        --tag t01 --set method.temperature=0.1                       # one ablation row
    python benchmarks/peer_quality.py --render-only

For each source, method and runner: pre-train ResNet-18 (small-image stem) for the same
epochs at the same batch, then evaluate the backbone features with vipr's weighted kNN
(k 200, T 0.07) and linear probe, then fine-tune it on a 10% label split with
``vipr eval finetune``'s recipe (--skip-finetune leaves that out). ``vipr`` runs are
``vipr pretrain`` with its defaults (plus ``--set`` for ablations); ``lightly`` runs are lightly's own recipe
(benchmarks/peer_lightly.py) on the same vipr backbone. Both train under bf16 autocast on a
CPU that has it. Sources: builtin:digits, the photo development set and a second photo set
(benchmarks/photo_sets.py regenerates both from photos shipped in packages).

Every job's record is kept in benchmarks/results/peer_quality.json (keyed by source, method,
runner, tag and seed), so an interrupted grid continues where it stopped; each prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "peer_quality.json"
SOURCES = ("digits", "photos", "photos_b")
METHODS = ("moco_v2", "simclr", "byol")
RUNNERS = ("random", "vipr", "lightly")
BACKBONE, IMAGE_SIZE = "resnet18", 32


def source_path(name: str) -> str:
    if name == "digits":
        return "builtin:digits"
    from photo_sets import build

    return str(build(name))


def evaluate(backbone, dataset, precision: str, train_rows=None, k: int = 200) -> dict:
    """kNN (``k``, T 0.07) and linear-probe top-1 (%) of the backbone's features on the test split, fitted
    on the train split (or its ``train_rows``: a label split)."""
    from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from vipr.eval.features import extract_features
    from vipr.eval.knn import knn_predict, topk_accuracy
    from vipr.eval.linear import train_linear

    backbone.eval()

    def features(images):
        return extract_features(backbone, images, image_size=IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                device=torch.device("cpu"), precision=precision, progress=False)

    rows = slice(None) if train_rows is None else train_rows
    train_x, test_x = features(dataset.train.images[rows]), features(dataset.test.images)
    train_y = torch.from_numpy(dataset.train.labels[rows]).long()
    test_y = torch.from_numpy(dataset.test.labels).long()
    scores = knn_predict(train_x, train_y, test_x, k=k, temperature=0.07, num_classes=dataset.num_classes)
    head = train_linear(train_x, train_y, dataset.num_classes, epochs=100)
    with torch.no_grad():
        linear = topk_accuracy(head(test_x), test_y)["top1"]
    return {"knn": topk_accuracy(scores, test_y)["top1"], "linear": linear}


def random_backbone():
    """The benchmark's random init: one fixed (seed 0) initialisation for every table."""
    from vipr.models import create_backbone

    torch.manual_seed(0)
    return create_backbone(BACKBONE, small_stem=True)


FINETUNE_PERCENT = 10  # % of the train labels the fine-tune sees (a stratified split)
FINETUNE_MIN_STEPS = 200  # as docs/results.md's fine-tune columns (benchmarks/results.py)


def finetune_top1(backbone, dataset, percent: int, seed: int, precision: str, strategy: str = "full",
                  **recipe) -> dict:
    """Top-1 (%) on the test split after ``vipr eval finetune``'s recipe on a ``percent``% label split
    (stratified, drawn with ``seed``); changes ``backbone``, so it runs after the frozen evaluations.
    ``recipe``: :func:`vipr.eval.finetune.finetune`'s ``head_init``, ``backbone_lr_scale`` and
    ``backbone_norm`` (its defaults when absent). ``strategy="auto"``: vipr.eval.finetune_select's choice
    between that fine-tune and the linear probe. Returns ``{"top1": %, "chosen": ...}`` (and, with ``auto``,
    the held-out scores of the choice)."""
    from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from vipr.data.splits import make_label_split
    from vipr.eval.finetune import finetune
    from vipr.eval.finetune_select import choose, fit_choice, heldout_top1, labelled_split

    rows = make_label_split(dataset.train.labels, label_fraction=percent / 100, seed=seed)
    labelled, classes = labelled_split(dataset.train, rows), dataset.num_classes
    inputs = dict(image_size=IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=torch.device("cpu"),
                  precision=precision)

    def recipe_run(model, split):
        return finetune(model, split, classes, **inputs, seed=seed, progress=False, min_steps=FINETUNE_MIN_STEPS,
                        **recipe)

    selection = {"chosen": "full"} if strategy == "full" else choose(backbone, labelled, classes, seed, recipe_run,
                                                                     **inputs)
    fit_choice(backbone, labelled, classes, selection["chosen"], recipe_run, **inputs)
    return {"top1": heldout_top1(backbone, backbone.head, dataset.test, **inputs), **selection}


def pretrain_vipr(source: str, method: str, args, seed: int, overrides: list[str], folder: Path) -> dict:
    """``vipr pretrain`` of the benchmark's backbone into ``folder`` (``args``: epochs, batch_size, precision);
    its metrics."""
    from vipr.config import apply_overrides
    from vipr.pretrain import build_config, run_pretrain

    settings = [f"data.source={source}", f"data.image_size={IMAGE_SIZE}", f"model.backbone={BACKBONE}",
                f"method.name={method}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
                f"train.seed={seed}", "train.progress=false", "train.checkpoint_every=0",
                f"train.precision={args.precision}", *overrides]
    return run_pretrain(build_config(apply_overrides({}, settings)), folder)


def run_vipr(source: str, method: str, args, seed: int, overrides: list[str], work: Path) -> tuple:
    from vipr.eval.features import load_eval_backbone

    started = time.perf_counter()
    metrics = pretrain_vipr(source, method, args, seed, overrides, work / "vipr")
    backbone, _ = load_eval_backbone(str(work / "vipr"))
    return backbone, {"steps": metrics["steps"], "seconds": time.perf_counter() - started}


def run_lightly(dataset, method: str, args, seed: int) -> tuple:
    import peer_lightly
    from vipr.models import create_backbone

    torch.manual_seed(seed)
    backbone = create_backbone(BACKBONE, small_stem=True)
    record = peer_lightly.pretrain(method, backbone, dataset.train.images, image_size=IMAGE_SIZE, epochs=args.epochs,
                                   batch_size=args.batch_size, seed=seed, precision=args.precision,
                                   aug=args.lightly_aug)
    return backbone, record


# forward-pass equivalents per image per step: a trained pass costs ~3 forwards (forward + backward)
PASSES = {("moco_v2", True): 2 * 3 + 2, ("moco_v2", False): 1 * 3 + 1, ("simclr", True): 2 * 3,
          ("byol", True): 2 * 3 + 2}


def gflops_per_image(method: str, symmetric: bool = True) -> float:
    """Training GFLOPs per image: the counted forward FLOPs of the backbone at 32 px x the method's passes
    (the projection heads are under 0.3% of it on either side, so they are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vipr.models import create_backbone

    backbone = create_backbone(BACKBONE, small_stem=True).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.forward_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    return counter.get_total_flops() * PASSES[(method, symmetric)] / 1e9


def run_job(source: str, method: str, runner: str, seed: int, args) -> dict:
    from vipr.data.sources import open_dataset

    path = source_path(source)
    dataset = open_dataset(path)
    with tempfile.TemporaryDirectory() as tmp:
        if runner == "vipr":
            backbone, record = run_vipr(path, method, args, seed, args.set, Path(tmp))
        elif runner == "lightly":
            backbone, record = run_lightly(dataset, method, args, seed)
        else:
            backbone, record = random_backbone(), {"steps": 0, "seconds": 0.0}
        record.update(evaluate(backbone, dataset, args.precision))
        if not args.skip_finetune:
            record["finetune10"] = finetune_top1(backbone, dataset, FINETUNE_PERCENT, seed, args.precision)["top1"]
    images = record["steps"] * args.batch_size
    record["images_per_s"] = images / record["seconds"] if record["seconds"] else None
    return record


def measured_on() -> dict:
    """The machine and date of a record, so a table can say where each row was measured."""
    from benchmarks_common import machine_info

    info = machine_info()
    return {"cpu": info["cpu"], "date": info["date"]}


def job_key(source: str, method: str, runner: str, tag: str, seed: int) -> str:
    return f"{source}/{method}/{runner}/{tag}/{seed}"


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save_result(key: str, record: dict) -> None:
    results = load_results()
    results[key] = record
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--set", nargs="*", default=[], help="vipr config overrides (an ablation row; give --tag)")
    parser.add_argument("--tag", default="default", help="name of this setting in the results")
    parser.add_argument("--lightly-aug", default="lightly", choices=("lightly", "vipr"),
                        help="views for lightly's recipe: its own PIL pipeline, or vipr's (an ablation; give --tag)")
    parser.add_argument("--skip-finetune", action="store_true",
                        help="leave out the fine-tune on 10%% of the train labels (the slowest evaluation)")
    parser.add_argument("--redo", action="store_true", help="re-run jobs already in the results")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.render_only:
        done = load_results()
        for source in args.sources:
            for method in args.methods:
                for runner in args.runners:
                    for seed in args.seeds:
                        tag = "default" if runner == "random" or (runner == "lightly" and args.lightly_aug == "lightly") \
                            else args.tag
                        method_name = "-" if runner == "random" else method
                        key = job_key(source, method_name, runner, tag, seed) + f"/{args.epochs}"
                        if key in done and not args.redo:
                            continue
                        record = {"source": source, "method": method_name, "runner": runner, "tag": tag,
                                  "seed": seed, "epochs": args.epochs, "batch_size": args.batch_size,
                                  "precision": args.precision,
                                  "overrides": args.set if runner == "vipr" else
                                  [f"aug={args.lightly_aug}"] if runner == "lightly" and args.lightly_aug != "lightly" else [],
                                  **run_job(source, method, runner, seed, args), **measured_on()}
                        save_result(key, record)
                        done[key] = record
                        print(json.dumps(record), flush=True)
    from render_peer import render

    render(with_flops(load_results()))


def with_flops(results: dict) -> dict:
    """Each trained record with its training GFLOPs per image (counted once per method and loss shape)."""
    for record in results.values():
        if record["runner"] != "random" and "gflops_per_image" not in record:
            symmetric = record["runner"] == "lightly" or "method.symmetric=false" not in record["overrides"]
            record["gflops_per_image"] = gflops_per_image(record["method"], symmetric)
    return results


if __name__ == "__main__":
    main()
