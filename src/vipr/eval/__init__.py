"""Evaluation of frozen backbones: kNN, linear probe, and the job that runs them (``vipr eval``)."""

from vipr.eval.features import extract_features, load_eval_backbone
from vipr.eval.knn import knn_predict, topk_accuracy
from vipr.eval.linear import fold_standardization, train_linear
from vipr.eval.runner import run_eval

__all__ = ["extract_features", "fold_standardization", "knn_predict", "load_eval_backbone", "run_eval",
           "topk_accuracy", "train_linear"]
