"""Models: reusable modules (``fastssl.models.modules``), utilities
(``fastssl.models.utils``) and synchronized batch norm (``fastssl.models.batchnorm``)."""

from fastssl.models import utils

__all__ = ["utils"]
