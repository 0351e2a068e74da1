"""Regularisers added to a self-supervised loss, with LightlySSL 1.6's names and arguments."""

from fastssl.loss.regularizer.co2 import CO2Regularizer
from fastssl.loss.regularizer.dse import DSERegularizer

__all__ = ["CO2Regularizer", "DSERegularizer"]
