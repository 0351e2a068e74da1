"""Fixtures of the loss tests."""

from __future__ import annotations

import pytest

from fastssl.kernels.contrastive import ENV_SWITCH


@pytest.fixture(params=["1", "0"], ids=["kernel", "reference"])
def loss_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once through the blockwise kernels (the default) and once through the
    plain formula (``FASTSSL_FUSED_LOSS=0``)."""
    monkeypatch.setenv(ENV_SWITCH, request.param)
    return str(request.param)
