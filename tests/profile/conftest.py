"""Shared fixtures of the ``fastssl profile`` tests: one torch thread, small image folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.train._tiny import make_folder


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a small, shared machine several threads per op run far
    slower and far noisier than one, which would blur the timings these tests compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 PNG images of 40 x 40 pixels in two class folders."""
    return make_folder(tmp_path_factory.mktemp("profile-images"), n=16, size=40)
