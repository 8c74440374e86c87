"""Initial weights from a file: ImageNet weights a user has locally, loaded into a vipr backbone by name and shape.

A file is one of:

* a torchvision state dict (``torch.save(torchvision.models.resnet50(...).state_dict(), PATH)``):
  ``conv1`` / ``bn1`` / ``layerN`` are renamed to vipr's ``stem.0`` / ``stem.1`` / ``stages.N-1``
  (``fc`` has no place in a backbone and is reported unexpected);
* a timm state dict for a ``timm:NAME`` backbone, in timm's own key names (timm's conversion
  of older layouts applies), or a timm ResNet's (timm keeps torchvision's names) for a vipr ResNet;
* a vipr checkpoint (``checkpoint.pt`` of a run, ``classifier.pt``): its backbone, which may be
  another architecture that shares layers (resnet18 -> resnet34: the stem and the first blocks);
* a ``.safetensors`` file of any of these, or a torch file whose ``state_dict`` / ``model``
  entry is one (training scripts' checkpoints); DDP's ``module.`` prefix is dropped.

Torch files are read with ``torch.load(weights_only=True)``: a file that would build anything but
tensors and plain containers is refused. Tensors load where the name and the shape both match;
the rest keep their random init and are reported (matched, missing, unexpected, other shape).
A file matching nothing is an error: a run must never train from random init by mistake.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vipr.errors import ConfigError
from vipr.fsutil import atomic_write_text

REPORT_NAME = "init_weights.json"
WRAPPERS = ("state_dict", "model", "backbone", "module")  # where training scripts keep the weights
_TORCHVISION_RESNET = ((re.compile(r"^conv1\."), "stem.0."), (re.compile(r"^bn1\."), "stem.1."),
                       (re.compile(r"^layer([1-4])\."), lambda m: f"stages.{int(m[1]) - 1}."))


@dataclass
class InitReport:
    """What a weights file gave a model: key lists, for the terminal (``summary``) and the run folder."""

    path: str
    model: str  # the architecture loaded into
    matched: list[str]
    missing: list[str]  # the model's tensors the file did not set (random init)
    unexpected: list[str]  # the file's tensors with no place in the model
    other_shape: list[str]  # "key: file (a, b) vs model (c, d)"

    def summary(self, flag: str = "--init-weights") -> str:
        """One short block: a headline, then the three lists, a few keys each."""
        total = len(self.matched) + len(self.missing)
        lines = [f"{flag} {self.path}: {len(self.matched)} of {total} tensors of {self.model} loaded"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("other shape", self.other_shape)):
            shown = f": {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}" if keys else ""
            lines.append(f"  {label:<11} {len(keys)}{shown}")
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / REPORT_NAME
        atomic_write_text(path, json.dumps(asdict(self), indent=1))
        return path


def read_state_dict(path: str | Path, flag: str = "--init-weights") -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring), by name; a ConfigError naming ``flag`` otherwise."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{flag} {path} {what}; pass a weights file (.pth, .pt, .safetensors or a vipr checkpoint)")
    loaded = _read_safetensors(path, flag) if path.suffix == ".safetensors" else _read_torch(path, flag)
    if isinstance(loaded, dict) and str(loaded.get("format", "")).startswith("vipr-checkpoint"):
        from vipr.engine import checkpoint

        if loaded["format"] != checkpoint.FORMAT:
            loaded = checkpoint.load(path)  # older formats come back migrated
        loaded = loaded.get("backbone")
    state = _unwrap(loaded)
    if not state:
        raise ConfigError(f"{flag} {path} holds no tensors by name (a {type(loaded).__name__}); pass a state dict "
                          f"(torch.save(model.state_dict(), PATH)), a .safetensors file or a vipr checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_torch(path: Path, flag: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        legacy = _vipr_checkpoint(path)  # format-1 vipr checkpoints hold numpy RNG states, read by their own rule
        if legacy is not None:
            return legacy
        if "global" not in str(err).lower():  # not a refused class or function: no pickle of ours at all
            raise ConfigError(f"{flag} {path} cannot be read as a torch file (UnpicklingError); "
                              f"pass a .pth/.pt state dict, a .safetensors file or a vipr checkpoint") from None
        raise ConfigError(f"{flag} {path}: refused, it holds objects beyond tensors and plain data and may run code "
                          f"when loaded; save the state dict alone (torch.save(model.state_dict(), PATH))") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ConfigError(f"{flag} {path} cannot be read as a torch file ({type(err).__name__}); "
                          f"pass a .pth/.pt state dict, a .safetensors file or a vipr checkpoint") from None


def _vipr_checkpoint(path: Path) -> dict | None:
    from vipr.engine import checkpoint
    from vipr.errors import CheckpointError

    try:
        return checkpoint.load(path)
    except CheckpointError:
        return None


def _read_safetensors(path: Path, flag: str) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ConfigError(f"{flag} {path}: .safetensors files need the safetensors package; "
                          f"pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ConfigError(f"{flag} {path} is not a readable .safetensors file ({err})") from None


def _unwrap(loaded) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, looking inside the usual wrappers of training checkpoints."""
    if not isinstance(loaded, dict):
        return {}
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    for key in WRAPPERS:
        if isinstance(loaded.get(key), dict):
            inner = _unwrap(loaded[key])
            if inner:
                return inner
    return {}


def vipr_key_names(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """``state`` under the names ``model`` uses, each with its name in the file: timm's own keys for a timm
    backbone (inside its ``model.``), torchvision's ResNet names renamed for vipr's, vipr's as they are."""
    from vipr.models.timm_backbone import TimmBackbone

    if not isinstance(model, TimmBackbone):
        return {_rename_torchvision(k): (k, v) for k, v in state.items()}
    inner = model.model
    plain = {k.removeprefix("model."): v for k, v in state.items()}
    filter_fn = getattr(sys.modules[type(inner).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None and not plain.keys() <= inner.state_dict().keys():
        try:  # timm's conversion of older layouts (and position-embedding resampling)
            plain = filter_fn(plain, inner)
        except Exception:  # a file of another model: the key report says what did not fit
            pass
    return {f"model.{k}": (k, v) for k, v in plain.items()}


def _rename_torchvision(key: str) -> str:
    for pattern, replacement in _TORCHVISION_RESNET:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def load_init_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, architecture: str,
                      flag: str = "--init-weights") -> InitReport:
    """Copy the tensors of ``state`` (from ``read_state_dict(path)``) that fit ``model``, in place; the report.

    A file of which no tensor fits raises a ConfigError: nothing would be initialised from it."""
    renamed = vipr_key_names(state, model)
    named, in_file = {k: v for k, (_, v) in renamed.items()}, {k: name for k, (name, _) in renamed.items()}
    own = model.state_dict()
    matched = {k: v for k, v in named.items() if k in own and own[k].shape == v.shape}
    other = [k for k in named if k in own and own[k].shape != named[k].shape]
    if not any(not k.endswith("num_batches_tracked") for k in matched):  # BatchNorm's step counters fit anything
        raise ConfigError(f"{flag} {path}: none of its {len(named)} tensors fits {architecture} by name and shape "
                          f"(the file's keys start {', '.join(sorted(state)[:3])}; the model's "
                          f"{', '.join(list(own)[:3])}); pass weights of this architecture")
    model.load_state_dict(matched, strict=False)
    return InitReport(str(path), architecture, sorted(matched), sorted(k for k in own if k not in matched),
                      sorted(in_file[k] for k in named if k not in own),
                      [f"{k}: file {tuple(named[k].shape)} vs model {tuple(own[k].shape)}" for k in sorted(other)])


def check_weights_file(path: str | Path, flag: str = "--init-weights") -> None:
    """A ConfigError now, before a run folder exists, when ``path`` is no readable file (read in full later)."""
    path = Path(path)
    if not path.is_file():
        read_state_dict(path, flag)  # raises, naming what is there instead
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise ConfigError(f"{flag} {path} cannot be read ({err.strerror}); check its permissions") from None


def initialise(model: nn.Module, path: str | Path, architecture: str, run_dir: str | Path | None = None,
               announce: bool = True, flag: str = "--init-weights") -> InitReport:
    """Load the weights file ``path`` into ``model``; print the report's summary, and write it into ``run_dir``."""
    report = load_init_weights(model, read_state_dict(path, flag), path, architecture, flag)
    if announce:
        print(report.summary(flag), file=sys.stderr)
    if run_dir is not None:
        report.write(run_dir)
    return report
