"""Few labels on a ResNet-18: what a MoCo v2 start gives a 10%-label fine-tune, and why, on unseen photos.

    python benchmarks/finetune_resnet.py                 # pre-trains once into --work-dir, then the rows
    python benchmarks/finetune_resnet.py --render-only

The setting of docs/peer_quality.md: ResNet-18 (small stem), 32 px, the second photo set
(``photos_b``, benchmarks/photo_sets.py), vipr's ``moco_v2`` defaults for 30 epochs at batch 128,
fp32, seed 0; random init is the benchmark's fixed seed-0 initialisation. On one 10% label split
(stratified, seed 0) each start is scored

- frozen: weighted kNN (k 20, T 0.07) and a linear probe fitted on the labelled images' features only,
  what the features give the few labels without any training of the backbone;
- fine-tuned (peer_quality.finetune_top1, 200 steps): ``recipe`` (vipr eval finetune's full fine-tune),
  ``probe`` (the head starts as the linear probe, LP-FT), ``frozen-ft`` (backbone lr 0; its
  BatchNorm statistics adapt), ``bn-frozen`` (the recipe with the backbone's BatchNorm on its
  pre-trained running statistics, ``backbone_norm="frozen"``) and ``auto`` (``vipr eval finetune``'s
  ``--strategy auto``: the recipe or the linear probe, chosen on a held-out fifth of the labels); and,
  the head starting as the probe, ``head-only`` (backbone weights and BatchNorm statistics fixed: only the
  head trains, on augmented crops), ``lp-ft-slow`` (backbone lr a hundredth of the head's) and
  ``lp-ft-slow-bn-frozen`` (that, with the BatchNorm statistics fixed).

Each row appends one JSON line to benchmarks/results/finetune_resnet.jsonl (an interrupted run
continues); docs/peer_quality.md's last section is rendered from them (render_peer.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peer_quality as peer  # noqa: E402  (sibling script: the backbone, data and fine-tune of its tables)

RECORDS = HERE / "results" / "finetune_resnet.jsonl"
SOURCE, EPOCHS, PERCENT, SEED, KNN_K = "photos_b", 30, 10, 0, 20
VARIANTS = {"recipe": {}, "probe": {"head_init": "probe"}, "frozen-ft": {"backbone_lr_scale": 0.0},
            "bn-frozen": {"backbone_norm": "frozen"}, "auto": {"strategy": "auto"},
            # the probe as the start, then only the head trains, or the backbone at a hundredth of the head's lr
            "head-only": {"head_init": "probe", "backbone_norm": "frozen", "backbone_lr_scale": 0.0},
            "lp-ft-slow": {"head_init": "probe", "backbone_lr_scale": 0.01},
            "lp-ft-slow-bn-frozen": {"head_init": "probe", "backbone_norm": "frozen", "backbone_lr_scale": 0.01}}
ROWS = [("moco_v2", "frozen"), ("random", "frozen"), ("moco_v2", "probe"), ("moco_v2", "frozen-ft"),
        ("moco_v2", "bn-frozen"), ("random", "recipe"), ("moco_v2", "recipe"), ("moco_v2", "head-only"),
        ("moco_v2", "lp-ft-slow"), ("moco_v2", "lp-ft-slow-bn-frozen"), ("moco_v2", "auto"), ("random", "auto")]


def start_backbone(start: str, work: Path):
    """A fresh copy of the start's backbone: random init, or vipr's moco_v2 run (pre-trained once)."""
    from vipr.eval.features import load_eval_backbone

    if start == "random":
        return peer.random_backbone()
    folder = work / "moco_v2"
    if not (folder / "checkpoint.pt").is_file():
        recipe = argparse.Namespace(epochs=EPOCHS, batch_size=128, precision="fp32")
        peer.pretrain_vipr(peer.source_path(SOURCE), "moco_v2", recipe, SEED, [], folder)
    return load_eval_backbone(str(folder))[0]


def run_row(start: str, variant: str, work: Path) -> dict:
    from vipr.data.sources import open_dataset
    from vipr.data.splits import make_label_split

    dataset = open_dataset(peer.source_path(SOURCE))
    backbone = start_backbone(start, work)
    if variant == "frozen":
        rows = make_label_split(dataset.train.labels, label_fraction=PERCENT / 100, seed=SEED)
        scores = peer.evaluate(backbone, dataset, "fp32", train_rows=rows, k=KNN_K)
    else:
        tuned = peer.finetune_top1(backbone, dataset, PERCENT, SEED, "fp32", **VARIANTS[variant])
        scores = {k: v for k, v in tuned.items() if k in ("top1", "chosen", "heldout_top1")}
    return {"start": start, "variant": variant, "source": SOURCE, "epochs": EPOCHS, "percent": PERCENT,
            "seed": SEED, **{k: round(v, 2) if isinstance(v, float) else v for k, v in scores.items()},
            **peer.measured_on()}


def load() -> list[dict]:
    return [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="runs/finetune_resnet", help="the pre-trained checkpoint")
    parser.add_argument("--render-only", action="store_true", help="re-render docs/peer_quality.md")
    args = parser.parse_args()
    if not args.render_only:
        done = {(r["start"], r["variant"]) for r in load()}
        for start, variant in (row for row in ROWS if row not in done):
            record = run_row(start, variant, Path(args.work_dir))
            RECORDS.parent.mkdir(parents=True, exist_ok=True)
            with RECORDS.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    from render_peer import render

    render(peer.with_flops(peer.load_results()))


if __name__ == "__main__":
    main()
