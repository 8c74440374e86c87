"""Time per epoch of every pre-training method relative to MoCo v2, on a quiet machine; one JSON line.

    python benchmarks/method_cost.py [--dataset shapes] [--steps 60]

Same recipe as benchmarks/results.py (`tiny` net, 32 px, batch 128). For each method: the
median time of ``--steps`` full training steps (batch read, augmentation, neighbour fetch,
forward, backward, update) after warm-up steps, in the phase that costs most (for CLIM,
CsMl/HSA and SCAN: after their first feature bank, so with neighbour positives), plus one
feature-bank refresh amortised over the epochs between refreshes. Epoch time =
steps per epoch x step time + refresh time / refresh_every (the table's schedule).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks_common import machine_info  # noqa: E402
from results import DATASETS, METHODS, NEIGHBOUR_METHODS, pretrain_overrides  # noqa: E402

from vipr.config import apply_overrides  # noqa: E402
from vipr.data.sources import open_dataset  # noqa: E402
from vipr.pretrain import build_config, build_trainer  # noqa: E402


def measure(method: str, source: str, epochs: int, steps: int, warmup: int) -> dict:
    config = build_config(apply_overrides({}, pretrain_overrides(method, source, epochs, seed=0)))
    trainer = build_trainer(config, open_dataset(source), torch.device("cpu"), Path("unused"))
    refresh_seconds, refresh_every = 0.0, 1
    if method in NEIGHBOUR_METHODS:
        table = trainer.model.table
        trainer.model.eval()
        refresh_seconds = trainer.model.on_epoch_start(table.start_epoch)["bank_seconds"]
        trainer.model.train()
        refresh_every = table.refresh_every
    batches = endless(trainer.loader)
    times = []
    for i in range(warmup + steps):
        batch = next(batches)
        start = time.perf_counter()
        trainer.train_step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    epoch = len(trainer.loader) * step + refresh_seconds / refresh_every
    return {"step_seconds": step, "refresh_seconds": refresh_seconds, "refresh_every": refresh_every,
            "epoch_seconds": epoch}


def endless(loader):
    """Batches of epoch 0, 1, 2, ... (a small split has fewer steps an epoch than we time)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader.iter_from(0)
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="shapes", choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=60)  # median of 60: +-5% between runs
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    source, epochs = DATASETS[args.dataset]
    costs = {m: measure(m, source, epochs, args.steps, args.warmup) for m in METHODS if m != "random"}
    base = costs["moco_v2"]["epoch_seconds"]
    for cost in costs.values():
        cost["vs_moco_v2"] = cost["epoch_seconds"] / base
    print(json.dumps({"benchmark": "method_cost", **machine_info(), "data": source, "methods": costs}))


if __name__ == "__main__":
    main()
