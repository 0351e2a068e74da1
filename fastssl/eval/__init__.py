"""Evaluation of pretrained backbones: weighted kNN, linear probe and fine-tuning, the
checkpoint loader they share, and backbone export (``fastssl eval`` / ``fastssl export``)."""

from fastssl.eval.checkpoint import CheckpointError, load_backbone, load_method
from fastssl.eval.features import (
    Features,
    LabeledData,
    NonFiniteFeaturesError,
    eval_transform,
    extract_features,
    open_labeled,
)
from fastssl.eval.finetune import finetune
from fastssl.eval.knn import knn_accuracy, knn_predict
from fastssl.eval.linear import ProbeResult, linear_probe, topk_accuracy

__all__ = [
    "CheckpointError",
    "Features",
    "LabeledData",
    "NonFiniteFeaturesError",
    "ProbeResult",
    "eval_transform",
    "extract_features",
    "finetune",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "load_backbone",
    "load_method",
    "open_labeled",
    "topk_accuracy",
]
