"""The search runner shared by every strategy: data, loop, progress, metrics, checkpoints, resume.

It drives any registered strategy through the protocol in vipr.nas.strategy. The run folder
gets config.yaml, env.json, metrics.jsonl (one line per epoch, with that epoch's genotype),
checkpoint.pt (atomic, every epoch and on Ctrl-C / SIGTERM), genotype.json (the final
genotype), genotypes.json (the whole series, when a strategy yields more than one) and
metrics.json. ``resume=True`` continues exactly: the checkpoint holds the strategy state
(supernet with alpha, optimizers, stage), the step and the RNG states.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vipr.config import config_digest, describe_changes, from_dict, to_dict
from vipr.data.sources import open_dataset
from vipr.engine import signals
from vipr.engine.checkpoint import CHECKPOINT_NAME, load, rng_state, save_atomic, set_rng_state
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.progress import MetricsLog, Progress
from vipr.engine.resume import check_same_config
from vipr.engine.rundir import prepare_run_dir, write_metrics
from vipr.engine.trainer import Interrupted
from vipr.nas import search_data
from vipr.nas.config import SearchConfig
from vipr.nas.strategy import SearchContext, check_strategy, create_strategy, strategy_class

FORMAT = "vipr-nas-search/1"
_NOT_COMPARED = {"progress", "num_threads", "device", "eval_batches"}  # may change on --resume


def build_config(data: dict) -> SearchConfig:
    """SearchConfig from a nested dict; unknown strategy or keys -> ConfigError with a suggestion."""
    check_strategy(str((data.get("strategy") or {}).get("name", "darts")))
    return from_dict(SearchConfig, data)


def resolve_search_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp32 on CPU (bf16 autocast measured slower for this supernet), else the GPU default."""
    if precision == "auto" and device.type == "cpu":
        return "fp32"
    return resolve_precision(precision, device)


def run_search(config: SearchConfig, out: str | Path, resume: bool = False) -> dict:
    """Run (or resume) a search into folder ``out``; returns the final metrics."""
    threads = torch.get_num_threads()
    try:
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        return _run(config, Path(out), resume)
    finally:
        torch.set_num_threads(threads)


def _run(config: SearchConfig, out: Path, resume: bool) -> dict:
    device = resolve_device(config.train.device)  # a device this machine lacks fails before the run folder
    out = prepare_run_dir(out, config, resume, CHECKPOINT_NAME)
    precision = resolve_search_precision(config.train.precision, device)
    torch.manual_seed(config.train.seed)
    dataset = open_dataset(config.data.source, store_size=config.data.store_size)
    bilevel = strategy_class(config.strategy.name).uses_val_split
    w_split, a_split = search_data.split_train(dataset.train, config.data.train_portion, config.train.seed, bilevel)
    w_loader, a_loader, steps = search_data.make_loaders(w_split, a_split, config.train.batch_size,
                                                         config.train.seed, device)
    provenance = {"strategy": config.strategy.name, "dataset": dataset.name, "data_digest": dataset.digest,
                  "seed": config.train.seed, "channels": config.network.channels, "layers": config.network.layers,
                  "batch_size": config.train.batch_size, "image_size": config.data.image_size}
    context = SearchContext(config, dataset.num_classes, steps, device, precision, provenance)
    loop = SearchLoop(create_strategy(context), config, out, (w_loader, a_loader, steps), device)
    if resume:
        loop.restore()
    return loop.fit()


class SearchLoop:
    """Epochs of arch/weight steps over paired batches; checkpoints; the final files."""

    def __init__(self, strategy, config: SearchConfig, out: Path, loaders, device: torch.device):
        self.strategy, self.config, self.out, self.device = strategy, config, Path(out), device
        self.w_loader, self.a_loader, self.steps = loaders
        self.generator = torch.Generator().manual_seed(config.train.seed)  # augmentation draws
        self.step = 0  # global step: epoch * steps + step in epoch
        self.log = MetricsLog(self.out / "metrics.jsonl")
        self.stop = signals.StopRequest()  # SIGINT / SIGTERM: save after the current step, then stop
        self.last: dict = {}

    # ---- checkpoint -------------------------------------------------------------------
    def save(self) -> None:
        save_atomic({"format": FORMAT, "config": _compared(self.config), "config_hash": self.config_hash(),
                     "step": self.step, "rng": rng_state(self.generator),
                     "strategy": self.strategy.state_dict(), "last": self.last}, self.out / CHECKPOINT_NAME)

    def restore(self) -> None:
        path = self.out / CHECKPOINT_NAME
        saved = load(path, expected_format=FORMAT)
        saved_digest = saved.get("config_hash") or config_digest(saved["config"])  # older checkpoints: no digest
        check_same_config(saved_digest, self.config_hash(), path,
                          lambda: describe_changes(saved["config"], _compared(self.config)))
        self.strategy.load_state_dict(saved["strategy"])
        self.step, self.last = saved["step"], saved.get("last", {})
        set_rng_state(saved["rng"], self.generator)  # after load_state_dict: rebuilding a stage draws from it

    # ---- loop -------------------------------------------------------------------------
    def fit(self) -> dict:
        total = self.strategy.total_epochs * self.steps
        bar = Progress(total, initial=self.step, enabled=self.config.train.progress, desc="search")
        try:
            with signals.handling(self.stop):
                start, offset = divmod(self.step, self.steps)
                for epoch in range(start, self.strategy.total_epochs):
                    if self.last.get("done"):
                        break
                    self._epoch(epoch, offset if epoch == start else 0, bar)
        finally:
            bar.close()
        return self._finish()

    def _epoch(self, epoch: int, first: int, bar: Progress) -> None:
        s, t0, sums, count = self.strategy, time.perf_counter(), {}, 0
        s.begin_epoch(epoch)
        for i, (train, val) in enumerate(self._batches(epoch, first), start=first):
            stats = s.arch_step(train, val) if s.arch_active(epoch) else {}
            stats.update(s.weight_step(train))
            self.step, count = self.step + 1, count + 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.postfix(f"epoch {epoch + 1} loss {stats.get('loss', float('nan')):.3f} "
                        f"val acc {_fmt(self.last.get('val_acc'))} {self.last.get('genotype_short', '')}")
            bar.advance()
            if self.stop.requested and i + 1 < self.steps:
                self.save()
                raise Interrupted(f"stopped by signal {self.stop.signum} at step {self.step}; checkpoint saved, "
                                  f"continue with --resume")
        self._end_epoch(epoch, {k: v / max(count, 1) for k, v in sums.items()}, time.perf_counter() - t0)

    def _end_epoch(self, epoch: int, means: dict, seconds: float) -> None:
        stats = self.strategy.end_epoch(epoch)
        genotype = self.strategy.genotype()
        record = {"epoch": epoch + 1, "step": self.step, **{f"{k}_mean": v for k, v in means.items()}, **stats,
                  "val_acc": self._val_accuracy(), "epoch_seconds": seconds, "genotype": genotype.to_dict()}
        self.last = {"val_acc": record["val_acc"], "genotype_short": _short(genotype), "epoch": epoch + 1,
                     "done": bool(self.strategy.done()), **{f"{k}_mean": v for k, v in means.items()}}
        self.log(record)
        self.save()
        if self.stop.requested:
            raise Interrupted(f"stopped by signal {self.stop.signum} after epoch {epoch + 1}; checkpoint saved, "
                              f"continue with --resume")

    def _batches(self, epoch: int, first: int):
        size = self.config.data.image_size
        self.w_loader.set_epoch(epoch, first)
        weights = self.w_loader.iter_from(first)
        alphas = None
        if self.a_loader is not None:
            self.a_loader.set_epoch(epoch, first)
            alphas = self.a_loader.iter_from(first)
        for _ in range(first, self.steps):
            batch = next(weights)
            train = (search_data.augment(batch.images, size, self.generator), batch.labels)
            val = None
            if alphas is not None:
                batch = next(alphas)
                val = (search_data.augment(batch.images, size, self.generator), batch.labels)
            yield train, val
        weights.close()
        if alphas is not None:
            alphas.close()

    def _val_accuracy(self) -> float | None:
        """Top-1 of the supernet on up to eval_batches batches of the alpha split (one-level strategies:
        of the train images); None when eval_batches is 0."""
        loader, limit = self.a_loader or self.w_loader, self.config.train.eval_batches
        if limit == 0:
            return None
        loader.set_epoch(0)
        correct = seen = 0
        batches = loader.iter_from(0)
        for n, batch in enumerate(batches):
            if n >= limit:
                break
            logits = self.strategy.predict(search_data.evaluation(batch.images, self.config.data.image_size))
            correct, seen = correct + int((logits.argmax(1) == batch.labels).sum()), seen + len(batch)
        batches.close()
        return correct / max(seen, 1)

    def _finish(self) -> dict:
        genotypes = self.strategy.genotypes()
        genotype = self.strategy.genotype()
        genotype.save(self.out / "genotype.json")
        if len(genotypes) > 1:
            (self.out / "genotypes.json").write_text(json.dumps([g.to_dict() for g in genotypes], indent=2) + "\n")
        if hasattr(self.strategy, "write_outputs"):  # optional hook (GOLD-NAS: genotypes/NNN.json, front.json)
            self.strategy.write_outputs(self.out)
        metrics = {"strategy": self.config.strategy.name, "epochs": self.last.get("epoch", 0), "steps": self.step,
                   "val_acc": self.last.get("val_acc"), "loss": self.last.get("loss_mean"),
                   "genotype": str(self.out / "genotype.json"), "genotypes": len(genotypes)}
        write_metrics(self.out, metrics)
        return metrics

    def config_hash(self) -> str:
        return config_digest(_compared(self.config))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _compared(config: SearchConfig) -> dict:
    data = to_dict(config)
    data["train"] = {k: v for k, v in data["train"].items() if k not in _NOT_COMPARED}
    return data


def _short(genotype) -> str:
    """Compact normal-cell text for the progress bar, e.g. 'sep3<0 skip<1 | ...'."""
    abbrev = {"sep_conv_": "sep", "dil_conv_": "dil", "max_pool_": "max", "avg_pool_": "avg", "skip_connect": "skip"}
    ops = []
    for e in genotype.normal.edges:
        name = e.op
        for long, short in abbrev.items():
            name = name.replace(long, short)
        ops.append(f"{name.replace('3x3', '3').replace('5x5', '5')}<{e.source}")
    return " ".join(ops)
