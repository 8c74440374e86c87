"""The evaluation protocols ``vipr eval KIND`` runs: ``register_protocol``, ``get_protocol``, ``list_protocols``.

A protocol is a function ``run(*, checkpoint, data, backbone=None, image_size=None, out=None,
device="auto", precision="auto", progress=True, **settings) -> metrics`` (top1 in %, at least)
that writes its run folder when given ``out``. Its entry here says what it is in one line
(the CLI's help) and whether it fits on a labelled subset (``--label-split``) and saves a
classifier. Registering one::

    register_protocol("mine", "what it measures", "my_package.module:run_mine", label_split=True)

Entries name their function as ``module:function`` and import it when run, so listing the
protocols (every ``vipr --help``) imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from vipr.config import suggest
from vipr.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str  # one line: what it measures
    target: str  # "module:function" of its run function
    label_split: bool = True  # fits on the train split, or a labelled subset of it
    classifier: bool = False  # saves classifier.pt (backbone + head + classes + preprocessing)
    fixed: tuple[tuple[str, object], ...] = ()  # keyword arguments every call passes (run_eval's kind)
    headline: str = "{kind}: top-1 {top1:.2f}%  top-5 {top5:.2f}%"  # the printed summary, formatted with the metrics

    def runner(self) -> Callable[..., dict]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)

    def run(self, **kwargs) -> dict:
        return self.runner()(**dict(self.fixed), **kwargs)


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(name: str, summary: str, target: str, *, label_split: bool = True, classifier: bool = False,
                      headline: str | None = None, **fixed) -> Protocol:
    """Register the protocol ``name`` whose run function is ``target`` ("module:function"), called with ``fixed``."""
    if name in _PROTOCOLS:
        raise ValueError(f"evaluation protocol '{name}' is registered twice")
    _PROTOCOLS[name] = Protocol(name, summary, target, label_split, classifier, tuple(fixed.items()),
                                *([headline] if headline else []))
    return _PROTOCOLS[name]


def list_protocols() -> list[str]:
    """Registered protocol names, in registration order (the order ``vipr eval --help`` shows)."""
    return list(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in _PROTOCOLS:
        raise ConfigError(f"unknown evaluation '{name}'{suggest(str(name), _PROTOCOLS)}")
    return _PROTOCOLS[name]


register_protocol("knn", "weighted kNN vote on frozen features", "vipr.eval.runner:run_eval", kind="knn")
register_protocol("linear", "linear probe on frozen features (saves classifier.pt)", "vipr.eval.runner:run_eval",
                  classifier=True, kind="linear")
register_protocol("finetune", "fine-tune on labelled images, or keep the frozen features' linear probe where "
                  "held-out labels prefer it (saves classifier.pt)", "vipr.eval.finetune:run_finetune",
                  classifier=True, headline="finetune: top-1 {top1:.2f}%  top-5 {top5:.2f}%  (kept: {chosen})")
register_protocol("fewshot", "N-way K-shot episodes, prototype classifier on frozen features",
                  "vipr.eval.fewshot:run_fewshot", label_split=False,
                  headline="fewshot {ways}-way {shots}-shot: {accuracy:.2f}% +/- {ci95:.2f} (95% interval over "
                           "{episodes} episodes)")
