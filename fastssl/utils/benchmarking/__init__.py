"""LightlySSL-compatible path for benchmarking helpers (``lightly.utils.benchmarking``)."""

from fastssl.utils.benchmarking.knn import knn_predict

__all__ = ["knn_predict"]
