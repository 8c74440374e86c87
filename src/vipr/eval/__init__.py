"""Evaluation of backbones: kNN, linear probe, fine-tuning, few-shot episodes, and their jobs (``vipr eval``).

The names below import their module on first use (PEP 562), so ``vipr.eval.protocols``, which
every ``vipr --help`` reads, imports no torch.
"""

import importlib

_HOMES = {"extract_features": "features", "load_eval_backbone": "features", "fewshot_accuracy": "fewshot",
          "prototype_scores": "fewshot", "run_fewshot": "fewshot", "finetune": "finetune", "run_finetune": "finetune",
          "knn_predict": "knn", "topk_accuracy": "knn", "fold_standardization": "linear", "train_linear": "linear",
          "run_eval": "runner"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'vipr.eval' has no attribute '{name}'")
    return getattr(importlib.import_module(f"vipr.eval.{_HOMES[name]}"), name)
