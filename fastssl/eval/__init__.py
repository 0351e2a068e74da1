"""Evaluation of pretrained backbones: weighted kNN (and, later, linear probe and fine-tuning)."""

from fastssl.eval.knn import knn_accuracy, knn_predict

__all__ = ["knn_accuracy", "knn_predict"]
