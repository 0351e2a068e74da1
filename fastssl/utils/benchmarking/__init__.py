"""LightlySSL-compatible path for benchmarking helpers (``lightly.utils.benchmarking``)."""

from fastssl.eval.knn import knn_predict

__all__ = ["knn_predict"]
