"""``fastssl profile``: measure what bounds a training run.

Modes (one module each, dispatched by :mod:`fastssl.profile.cli`):

* ``--loader-only``: images/s of a data-loading backend alone (:func:`measure_loader`).

Compute-only and full-pipeline modes come later; they plug into the same ``MODES``
table of the CLI and write the same kind of JSON report.
"""

from __future__ import annotations

from fastssl.profile.cli import LoaderReport, measure_loader, resolve_transform

__all__ = ["LoaderReport", "measure_loader", "resolve_transform"]
