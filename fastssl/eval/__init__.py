"""Evaluation of pretrained backbones: weighted kNN, linear probe and fine-tuning with the
protocols of LightlySSL's ImageNet benchmarks, the checkpoint loader they share (and the
choice of the network the method's paper evaluates), and backbone export (``fastssl eval`` /
``fastssl export``)."""

from fastssl.eval.checkpoint import CheckpointError, load_backbone, load_method, select_backbone
from fastssl.eval.features import (
    Features,
    LabeledData,
    NonFiniteFeaturesError,
    eval_resize,
    eval_transform,
    extract_features,
    open_labeled,
    train_transform,
)
from fastssl.eval.finetune import FinetuneRecipe, finetune, finetune_recipe
from fastssl.eval.knn import knn_accuracy, knn_predict
from fastssl.eval.linear import ProbeResult, linear_probe, linear_probe_augmented, topk_accuracy

__all__ = [
    "CheckpointError",
    "Features",
    "FinetuneRecipe",
    "LabeledData",
    "NonFiniteFeaturesError",
    "ProbeResult",
    "eval_resize",
    "eval_transform",
    "extract_features",
    "finetune",
    "finetune_recipe",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "linear_probe_augmented",
    "load_backbone",
    "load_method",
    "open_labeled",
    "select_backbone",
    "topk_accuracy",
    "train_transform",
]
