"""The authors' search code, timed the way their train_search.py runs it: the reference of benchmarks/nas.py.

Nothing of theirs lives in this repository: ``--darts-repo`` / ``--pcdarts-repo`` name checkouts of
quark0/darts and yuhuixu1993/PC-DARTS, and their ``model_search.py``, ``architect.py``,
``operations.py`` and ``genotypes.py`` are imported from there (``cnn/`` in DARTS, the top folder
in PC-DARTS). One case per process, so the two repositories' same-named modules never meet.

What one step is, as in their ``train()`` loop:

* arch step: ``Architect.step(train, val, eta=lr, network_optimizer, unrolled)`` (their own code:
  first order for ``unrolled=False``, the unrolled finite-difference step for ``unrolled=True``);
* weight step: ``optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward();
  nn.utils.clip_grad_norm_(model.parameters(), 5); optimizer.step()``.

Patched at import time, only what torch 2.x on a CPU refuses (``AUTHORS_PATCHES``, also written
into the JSON record): ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return ``self``, because
there is no CUDA device here and their code calls ``.cuda()`` on the alphas (``_initialize_alphas``),
on ``Network.new()`` and on the unrolled model (``_construct_model_from_theta``). Their deprecated
``Tensor.sub(Number, Tensor)`` / ``add_(Tensor, Tensor)`` overloads still run in torch 2.x (with a
warning), so they are left alone; ``train_search.py`` itself (``.cuda(async=True)``, ``.data[0]``,
``Variable(volatile=True)``) is not imported: the loop above stands in for it. Their code runs
unchanged otherwise: contiguous (not channels-last) tensors, fp32, PC-DARTS' K = 4 hard-coded in
its ``MixedOp``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

# case -> (which repository, Architect.step's unrolled flag)
AUTHORS_CASES = {"darts_1st": ("darts", False), "darts_2nd": ("darts", True), "pcdarts": ("pcdarts", False)}
UPSTREAM = {"darts": "quark0/darts", "pcdarts": "yuhuixu1993/PC-DARTS"}
# Their train_search.py defaults; lr is also eta, the unrolled step's weight learning rate (epoch 0 of
# the cosine schedule). PC-DARTS' are for its batch 256; vipr's pcdarts strategy uses the same ones.
HYPER = {
    "darts": {"learning_rate": 0.025, "momentum": 0.9, "weight_decay": 3e-4, "arch_learning_rate": 3e-4,
              "arch_weight_decay": 1e-3, "grad_clip": 5.0},
    "pcdarts": {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 3e-4, "arch_learning_rate": 6e-4,
                "arch_weight_decay": 1e-3, "grad_clip": 5.0},
}
AUTHORS_PATCHES = [
    "torch.Tensor.cuda = lambda self, *a, **k: self (no CUDA device: their alphas, Network.new() and the "
    "unrolled model call .cuda())",
    "torch.nn.Module.cuda = lambda self, *a, **k: self (same reason)",
]


def code_dir(repo: str | Path) -> Path:
    """The folder holding model_search.py: ``cnn/`` in quark0/darts, the top folder in PC-DARTS."""
    repo = Path(repo).resolve()
    for folder in (repo / "cnn", repo):
        if (folder / "model_search.py").is_file() and (folder / "architect.py").is_file():
            return folder
    raise FileNotFoundError(f"no model_search.py + architect.py in {repo} or {repo / 'cnn'}")


def commit_of(repo: str | Path) -> str | None:
    """The checkout's HEAD commit, so the record says exactly which code was measured."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def source_line(repos: dict[str, str]) -> str | None:
    """'measured in this run from PATH (owner/name @ commit), ...' for the record's reference_source."""
    if not repos:
        return None
    parts = [f"{Path(path).resolve()} ({UPSTREAM[kind]} @ {commit_of(path)})" for kind, path in repos.items()]
    return "measured in this run from " + ", ".join(parts)


def apply_patches() -> None:
    """The CPU stand-ins listed in AUTHORS_PATCHES (nothing else of torch or of their code changes)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self


def import_authors(repo: str | Path):
    """Their model_search and architect modules, imported from the checkout (they import operations/genotypes)."""
    sys.path.insert(0, str(code_dir(repo)))
    return importlib.import_module("model_search"), importlib.import_module("architect")


def build(kind: str, repo: str | Path):
    """Network(C=16, 10 classes, layers=8), their SGD on the weights and their Architect (Adam on alpha)."""
    apply_patches()
    model_search, architect = import_authors(repo)
    h = HYPER[kind]
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(16, 10, 8, criterion)
    optimizer = torch.optim.SGD(model.parameters(), h["learning_rate"], momentum=h["momentum"],
                                weight_decay=h["weight_decay"])
    args = SimpleNamespace(momentum=h["momentum"], weight_decay=h["weight_decay"],
                           arch_learning_rate=h["arch_learning_rate"], arch_weight_decay=h["arch_weight_decay"])
    return model, criterion, optimizer, architect.Architect(model, args)


def weight_step(model, criterion, optimizer, images, labels, grad_clip: float) -> None:
    """train_search.py's weight update (clip_grad_norm, renamed clip_grad_norm_ in torch 0.4)."""
    optimizer.zero_grad()
    loss = criterion(model(images), labels)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def time_steps(case: str, repo: str | Path, batch: int, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of each arch step and each weight step, warm-up included (same data as vipr's measure())."""
    kind, unrolled = AUTHORS_CASES[case]
    torch.manual_seed(0)
    model, criterion, optimizer, architect = build(kind, repo)
    model.train()
    (x_train, y_train), (x_val, y_val) = [(torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,)))
                                          for _ in range(2)]
    eta = HYPER[kind]["learning_rate"]
    arch_times, weight_times = [], []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        architect.step(x_train, y_train, x_val, y_val, eta, optimizer, unrolled=unrolled)
        arch_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        weight_step(model, criterion, optimizer, x_train, y_train, HYPER[kind]["grad_clip"])
        weight_times.append(time.perf_counter() - t0)
    return arch_times, weight_times
