"""Evaluation of backbones: kNN, linear probe, fine-tuning, few-shot episodes, and their jobs (``vipr eval``)."""

from vipr.eval.features import extract_features, load_eval_backbone
from vipr.eval.fewshot import fewshot_accuracy, prototype_scores, run_fewshot
from vipr.eval.finetune import finetune, run_finetune
from vipr.eval.knn import knn_predict, topk_accuracy
from vipr.eval.linear import fold_standardization, train_linear
from vipr.eval.runner import run_eval

__all__ = ["extract_features", "fewshot_accuracy", "finetune", "fold_standardization", "knn_predict",
           "load_eval_backbone", "prototype_scores", "run_eval", "run_fewshot", "run_finetune", "topk_accuracy",
           "train_linear"]
