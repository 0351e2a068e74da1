"""LightlySSL-compatible path for benchmarking helpers (``lightly.utils.benchmarking``).

Exports the same names as LightlySSL 1.6. The Lightning-based ones (every name but
``knn_predict``) are imported on first use, so that ``knn_predict``, which the kNN
evaluation of ``fastssl eval`` uses, does not pay for importing PyTorch Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fastssl.utils.benchmarking.knn import knn_predict

if TYPE_CHECKING:
    from fastssl.utils.benchmarking.benchmark_module import BenchmarkModule
    from fastssl.utils.benchmarking.knn_classifier import KNNClassifier
    from fastssl.utils.benchmarking.linear_classifier import FinetuneClassifier, LinearClassifier
    from fastssl.utils.benchmarking.metric_callback import MetricCallback
    from fastssl.utils.benchmarking.online_linear_classifier import OnlineLinearClassifier

# Name -> submodule defining it, for the names imported on first use.
_LAZY = {
    "BenchmarkModule": "benchmark_module",
    "KNNClassifier": "knn_classifier",
    "FinetuneClassifier": "linear_classifier",
    "LinearClassifier": "linear_classifier",
    "MetricCallback": "metric_callback",
    "OnlineLinearClassifier": "online_linear_classifier",
}

__all__ = [
    "BenchmarkModule",
    "FinetuneClassifier",
    "KNNClassifier",
    "LinearClassifier",
    "MetricCallback",
    "OnlineLinearClassifier",
    "knn_predict",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
