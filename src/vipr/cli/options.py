"""Typed options of the commands without a config file (eval, data split, serve, ui, model alias).

Each command's numeric options are fields of a frozen dataclass with a declared Range, like
every config key (vipr.config), and are read through ``read_options`` before any data is
opened, so ``--k 0`` fails at once with a message naming the flag, the value and the range.
Fields are named as the argparse destinations; the flag is ``--`` + the name with dashes.
The argparse defaults are None and the dataclass holds the defaults, so help texts quote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from vipr.config import (BATCH, COUNT, DEVICE, EPOCHS, FRACTION, SEED, SIDE_PX, TEMPERATURE, Choices,
                         ConfigValueError, LR, Range, from_dict)
from vipr.errors import ConfigError

T = TypeVar("T")

PORT = Range(1, 65535)


@dataclass(frozen=True)
class EvalOptions:
    image_size: Annotated[int | None, SIDE_PX] = None  # px; None: the checkpoint's
    device: Annotated[str, DEVICE] = "auto"  # vipr.engine.device.resolve_device


@dataclass(frozen=True)
class KnnOptions(EvalOptions):
    k: Annotated[int, Range(1, 10**7)] = 200  # neighbours; more than the train images is clamped (with a warning)
    temperature: Annotated[float, TEMPERATURE] = 0.07


@dataclass(frozen=True)
class FinetuneOptions(EvalOptions):
    epochs: Annotated[int, Range(1, 10**6)] = 30
    batch_size: Annotated[int, BATCH] = 64
    min_steps: Annotated[int, EPOCHS] = 500  # at least this many optimizer steps
    lr: Annotated[float, LR] = 0.1  # head, per batch of 64; the backbone gets lr * BACKBONE_LR_SCALE
    seed: Annotated[int, SEED] = 0
    init_weights: str | None = None  # weights file loaded into the backbone first (vipr.models.init_weights)
    strategy: Annotated[str, Choices("full", "auto")] = "full"  # vipr.eval.finetune_select


@dataclass(frozen=True)
class FewshotOptions(EvalOptions):
    ways: Annotated[int, Range(2, 10**4)] = 5
    shots: Annotated[int, Range(1, 10**4)] = 5
    queries: Annotated[int, Range(1, 10**4)] = 15
    episodes: Annotated[int, Range(1, 10**7)] = 600
    seed: Annotated[int, SEED] = 0


@dataclass(frozen=True)
class FeaturesOptions(EvalOptions):
    batch_size: Annotated[int, BATCH] = 256  # images per forward pass
    split: Annotated[str, Choices("all", "train", "test")] = "all"


@dataclass(frozen=True)
class SplitOptions:
    label_fraction: Annotated[float | None, FRACTION] = None
    per_class: Annotated[int | None, Range(1, 10**7)] = None
    seed: Annotated[int, SEED] = 0


@dataclass(frozen=True)
class ServeOptions:
    port: Annotated[int, PORT] = 8000
    max_batch_size: Annotated[int, Range(1, 2**16)] = 16
    max_delay_ms: Annotated[float, Range(0, 60_000)] = 5.0
    max_queue: Annotated[int, Range(1, 10**6)] = 256
    max_pixels: Annotated[int, Range(1, 2**31)] = 4096 * 4096  # largest image accepted (413 over)
    device: Annotated[str, DEVICE] = "auto"  # the torch runtime's device; onnx: CUDA where onnxruntime has it


@dataclass(frozen=True)
class UiOptions:
    port: Annotated[int, PORT] = 5000


@dataclass(frozen=True)
class LaunchOptions:
    nproc_per_node: Annotated[int, Range(1, 1024)] = 1  # processes on this node (DDP through torchrun)


@dataclass(frozen=True)
class AliasOptions:
    version: Annotated[int, COUNT] = 1


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_options(cls: type[T], args: Any, names: dict[str, str] | None = None) -> T:
    """``cls`` from the parsed ``args`` (destinations named as its fields; None = the default).

    ``names`` maps a field to how the user wrote it when that is not ``--field-name``
    (a positional argument)."""
    import dataclasses

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    try:
        return from_dict(cls, given)
    except ConfigValueError as err:
        raise ConfigError(err.describe((names or {}).get(err.key, flag(err.key)))) from None


def naming_flags(err: ConfigValueError, flag_keys: dict[str, str]) -> ConfigError:
    """The error of a config key some option sets, naming both: ``--batch-size (train.batch_size) must be ...``."""
    by_key = {key: flag(name) for name, key in flag_keys.items()}
    if err.key not in by_key:
        return err
    return ConfigError(err.describe(by_key[err.key] if by_key[err.key] == flag(err.key) else
                                    f"{by_key[err.key]} ({err.key})"))
