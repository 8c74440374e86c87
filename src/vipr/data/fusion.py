"""Fused augmentation kernels: the per-pixel ops of a view compiled by ``torch.compile``, within a scope.

A view's ops on the CPU are memory-bound elementwise passes (``vipr.data.photometric``): the
HSV hue shift alone is a dozen. Inductor fuses each op's passes into one loop. An op marked
``@fusable`` runs compiled inside ``fused_kernels(True)`` and eagerly everywhere else, so a
test or a caller outside the scope always gets the eager op; both compute the same formula,
to float32 rounding (compiled and eager views differ by at most about 1e-5 after normalising).

Compiling costs seconds per op once per process (inductor keeps the generated code in its disk
cache for later processes), which only large views pay back. Each (chunk rows, side) shape
compiles once: a batch has at most two (whole chunks and the remainder); past dynamo's limit
of shapes per op (8 by default) a new shape runs eagerly. Where compiling fails
(no C++ compiler; on CUDA, no triton), the op warns once and runs eagerly from then on.

Measured on an AMD EPYC (2 cores), 2026-12-03, moco_v2's two 224-px views from a raw store: 169
against 145 images/s on 2 threads, 134 against 94 on 1 (benchmarks/augment.py). From the encoded
store, beside its decode threads, there is no steady gain: 78.5 against 84.0 in the recorded run
(benchmarks/encoded_pipeline.py), and the compiled side ahead in 5 of 8 paired runs that day, by
-13% to +16%. Inductor's CPU kernels run holding the GIL (its binding calls the kernel without
releasing it, where aten's eager ops release it), so the decode threads wait on them for their
Python glue. Per op (6 images, 1 thread): hue 29.4 -> 6.1 ms, contrast 1.3 -> 0.5, the flip and
float conversion 2.9 -> 2.4, grayscale 2.6 -> 1.6, normalising into the output 1.9 -> 0.4;
brightness and saturation, one in-place pass each eagerly, were slower compiled and stay eager.
``train.fused_augment`` is on by default for views of ``FUSED_MIN_SIDE`` px and more.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

# views of at least this side (px) run the fused kernels by default (train.fused_augment): below it a chunk is
# the whole batch in cache, and compiling (seconds) would not pay back in a short run
FUSED_MIN_SIDE = 128


_enabled = [False]  # set by fused_kernels for its scope


@contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Within the scope, ``@fusable`` ops run compiled (``enabled``) or eagerly."""
    previous = _enabled[0]
    _enabled[0] = enabled
    try:
        yield
    finally:
        _enabled[0] = previous


class fusable:  # noqa: N801  (used as a decorator)
    """An op that runs ``torch.compile``'d inside ``fused_kernels(True)``, compiled on its first call there."""

    def __init__(self, eager: Callable[..., Tensor]):
        functools.update_wrapper(self, eager)
        self.eager = eager
        self.compiled: Callable[..., Tensor] | None = None
        self.broken = False

    def __call__(self, *args) -> Tensor:
        if _enabled[0] and not self.broken:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.eager, dynamic=False)
                return self.compiled(*args)
            except Exception as err:  # inductor needs a working C++ compiler (or triton on CUDA)
                self.broken = True
                warnings.warn(f"augmentation: compiling {self.eager.__name__} failed ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); running it uncompiled "
                              "(train.fused_augment=false skips the attempt)", stacklevel=2)
        return self.eager(*args)
