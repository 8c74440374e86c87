"""``vipr nas search``: data, strategy and task in, the one engine runs it, the genotypes out.

Any registered strategy (vipr.nas.strategy) runs in vipr's training loop
(vipr.engine.trainer.Trainer) as a :class:`vipr.nas.search_task.SearchTask`: the engine owns
the loop, the optimizers' checkpoints and learning rates, exact resume, Ctrl-C / SIGTERM,
progress and metrics, as for pre-training. The run folder gets config.yaml, env.json,
metrics.jsonl (one line per epoch, with that epoch's genotype), checkpoint.pt (atomic, every
epoch and on a stop signal: the strategy state with supernet and alpha, both optimizers, the
step and the RNG states, under ``RunRecord`` format ``vipr-nas-search/2``), genotype.json (the
final genotype), genotypes.json (the whole series, when a strategy yields more than one) and
metrics.json. ``resume=True`` continues exactly, under the same config digest only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vipr.config import config_digest, from_dict, to_dict
from vipr.data.loader import BatchIterator
from vipr.data.sources import open_dataset
from vipr.engine.checkpoint import CHECKPOINT_NAME, RunRecord, load
from vipr.engine.device import resolve_device, resolve_precision
from vipr.engine.progress import MetricsLog, last_epoch_record
from vipr.engine.rundir import check_run_dir, prepare_run_dir, write_metrics
from vipr.engine.trainer import LoopSettings, Trainer
from vipr.errors import CheckpointError
from vipr.fsutil import atomic_write_text
from vipr.nas import search_data
from vipr.nas.config import SearchConfig
from vipr.nas.search_task import SearchTask
from vipr.nas.strategy import SearchContext, check_strategy, create_strategy, strategy_class

FORMAT = "vipr-nas-search/2"  # /1: the loop before the engine, not resumable here
FORMAT_V1 = "vipr-nas-search/1"
_NOT_COMPARED = {"progress", "num_threads", "device", "eval_batches"}  # may change on --resume


def build_config(data: dict) -> SearchConfig:
    """SearchConfig from a nested dict; unknown strategy or keys -> ConfigError with a suggestion."""
    check_strategy(str((data.get("strategy") or {}).get("name", "darts")))
    return from_dict(SearchConfig, keep_warmup_share(data))


def keep_warmup_share(data: dict) -> dict:
    """``data`` with strategy.warmup_epochs scaled to strategy.epochs when only the epochs are given, so the
    paper's share of weight-only epochs is kept (PC-DARTS: 15 of 50, so 3 of 10) instead of a warm-up
    longer than the search."""
    strategy = data.get("strategy") or {}
    epochs = strategy.get("epochs")
    if "warmup_epochs" in strategy or type(epochs) is not int or epochs < 1:  # bad values: from_dict says so
        return data
    default = from_dict(SearchConfig, {"strategy": {"name": strategy.get("name", "darts")}}).strategy
    return {**data, "strategy": {**strategy, "warmup_epochs": default.warmup_epochs * epochs // default.epochs}}


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
    check_run_dir(out, resume, CHECKPOINT_NAME)
    dataset = open_dataset(config.data.source, store_size=config.data.store_size)
    out = prepare_run_dir(out, config, resume, CHECKPOINT_NAME)
    precision = resolve_search_precision(config.train.precision, device)
    torch.manual_seed(config.train.seed)
    bilevel = strategy_class(config.strategy.name).uses_val_split
    w_split, a_split = search_data.split_train(dataset.train, config.data.train_portion, config.train.seed, bilevel)
    w_loader, a_loader, steps = search_data.make_loaders(w_split, a_split, config.train.batch_size,
                                                         config.train.seed, device)
    provenance = {"strategy": config.strategy.name, "dataset": dataset.name, "data_digest": dataset.digest,
                  "seed": config.train.seed, "channels": config.network.channels, "layers": config.network.layers,
                  "batch_size": config.train.batch_size, "image_size": config.data.image_size}
    context = SearchContext(config, dataset.num_classes, steps, device, precision, provenance)
    strategy = create_strategy(context)
    generator = torch.Generator().manual_seed(config.train.seed)  # augmentation draws (not training_generator's)
    score_split, score_seed = (a_split, config.train.seed + 1) if a_split is not None else (w_split, config.train.seed)
    scored = BatchIterator(score_split, config.train.batch_size, seed=score_seed, device=device)  # "val acc"
    task = SearchTask(strategy, config.data.image_size, generator, scored, config.train.eval_batches)
    settings = LoopSettings(epochs=strategy.total_epochs, precision=precision, log_every=0,
                            progress=config.train.progress, seed=config.train.seed, name="search")
    record = RunRecord(FORMAT, _compared(config), config_hash(config))
    trainer = Trainer(task, None, search_data.PairedBatches(w_loader, a_loader, steps), settings, out, record,
                      device, generator)
    if resume:
        _restore(trainer, out / CHECKPOINT_NAME)
    trainer.fit(MetricsLog(out / "metrics.jsonl"))
    return _finish(strategy, config, out, trainer.step)


def _restore(trainer: Trainer, path: Path) -> None:
    """``trainer.restore``; a checkpoint of the loop before the engine is refused in one line."""
    try:
        trainer.restore(path)
    except CheckpointError:
        if not _is_format(path, FORMAT_V1):
            raise
        raise CheckpointError(f"{path} was written by an older vipr ({FORMAT_V1}), whose search state this vipr "
                              "cannot continue; start the search again in a new --out folder") from None


def _is_format(path: Path, expected: str) -> bool:
    try:
        load(path, expected_format=expected)
    except CheckpointError:
        return False
    return True


def _finish(strategy, config: SearchConfig, out: Path, step: int) -> dict:
    genotypes = strategy.genotypes()
    genotype = strategy.genotype()
    genotype.save(out / "genotype.json")
    if len(genotypes) > 1:
        atomic_write_text(out / "genotypes.json", json.dumps([g.to_dict() for g in genotypes], indent=2) + "\n")
    if hasattr(strategy, "write_outputs"):  # optional hook (GOLD-NAS: genotypes/NNN.json, front.json)
        strategy.write_outputs(out)
    last = last_epoch_record(out / "metrics.jsonl")
    metrics = {"strategy": config.strategy.name, "epochs": last.get("epoch", 0), "steps": step,
               "val_acc": last.get("val_acc"), "loss": last.get("loss_mean"),
               "genotype": str(out / "genotype.json"), "genotypes": len(genotypes)}
    write_metrics(out, metrics)
    return metrics


def config_hash(config: SearchConfig) -> str:
    return config_digest(_compared(config))


def _compared(config: SearchConfig) -> dict:
    data = to_dict(config)
    data["train"] = {k: v for k, v in data["train"].items() if k not in _NOT_COMPARED}
    return data

