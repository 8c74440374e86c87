"""Distillation of a frozen teacher into a student, as pre-training methods (``vipr distill``).

SEED, BINGO, KD and feature (FitNets-style) distillation are methods of the pre-training
registry (:mod:`vipr.ssl.registry`), registered when ``vipr.ssl`` is imported, so the one
engine runs them with pre-training's resume, signals, DDP, precision, progress, tracking and
run folder. Their settings subclass :class:`vipr.distill.settings.DistillConfig` (the
teacher); the teacher is loaded and held by :mod:`vipr.distill.teacher`; the losses are in
:mod:`vipr.distill.losses`; :func:`vipr.distill.run.run_distill` is the job.
"""

import vipr.ssl  # noqa: F401,E402  first: it imports this package's methods, which import vipr.ssl.registry
