"""Re-export of :class:`~fastssl.models.modules.memory_bank.MemoryBankModule`.

LightlySSL keeps ``lightly.loss.memory_bank`` for code written before the bank moved to
``lightly.models.modules``; this module keeps that import path working.
"""

from __future__ import annotations

from fastssl.models.modules.memory_bank import MemoryBankModule

__all__ = ["MemoryBankModule"]
