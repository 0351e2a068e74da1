"""The blockwise kernels are the path users run: public losses, methods and ``fastssl pretrain``.

Each test counts the calls of the kernels' custom operators (``fastssl::lse_sum`` and
``fastssl::lse_rows``); a public class, method step or training run that bypassed them (or
built the full similarity matrix instead) fails here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from fastssl.cli import main
from fastssl.kernels import contrastive
from fastssl.loss import DCLLoss, DCLWLoss, NTXentLoss
from fastssl.methods.moco import moco_v3_loss
from tests.train._tiny import make_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the calls of each kernel operator while the test runs."""
    calls: Counter[str] = Counter()

    def counted(name: str, op: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return op(*args)

        return wrapper

    for name in ("_lse_sum_op", "_lse_rows_op"):
        monkeypatch.setattr(contrastive, name, counted(name, getattr(contrastive, name)))
    yield calls


def _pair(n: int = 6, d: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, d, generator=g, requires_grad=True),
        torch.randn(n, d, generator=g, requires_grad=True),
    )


LOSSES: dict[str, tuple[Callable[[], Any], str]] = {
    "ntxent": (lambda: NTXentLoss(0.2), "_lse_sum_op"),
    "ntxent_memory_bank": (lambda: NTXentLoss(0.2, memory_bank_size=(16, 8)), "_lse_rows_op"),
    "dcl": (lambda: DCLLoss(0.2), "_lse_sum_op"),
    "dclw": (lambda: DCLWLoss(0.2, sigma=0.5), "_lse_sum_op"),
    "moco_v3": (lambda: lambda q, k: moco_v3_loss(q, k, 0.2), "_lse_sum_op"),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_public_losses_run_the_kernel_by_default(
    name: str, kernel_calls: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make, op = LOSSES[name]
    out0, out1 = _pair()
    torch.manual_seed(0)
    fused = make()(out0, out1)
    fused.backward()
    assert kernel_calls[op] == 1, kernel_calls
    # FASTSSL_FUSED_LOSS=0 is the one way to the plain formula, and it gives the same value.
    kernel_calls.clear()
    monkeypatch.setenv(contrastive.ENV_SWITCH, "0")
    torch.manual_seed(0)
    reference = make()(out0, out1)
    assert sum(kernel_calls.values()) == 0
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.compile
def test_compiled_loss_keeps_the_kernel_in_the_graph(kernel_calls: Counter[str]) -> None:
    # The kernels are custom operators: fullgraph=True traces them as one opaque call, so a
    # compiled step runs the same memory-lean code as an eager one (inductor, the default).
    torch._dynamo.reset()
    out0, out1 = _pair(10, 8)
    loss = torch.compile(NTXentLoss(0.3), fullgraph=True)(out0, out1)
    grads = torch.autograd.grad(loss, (out0, out1))
    assert kernel_calls["_lse_sum_op"] >= 1
    eager = NTXentLoss(0.3)(out0, out1)
    torch.testing.assert_close(loss, eager)
    for a, b in zip(grads, torch.autograd.grad(eager, (out0, out1)), strict=True):
        torch.testing.assert_close(a, b)


def test_fastssl_pretrain_simclr_runs_the_kernel(
    tmp_path: Path, kernel_calls: Counter[str]
) -> None:
    images = make_folder(tmp_path / "images", n=16, size=40)
    out = tmp_path / "out"
    code = main(
        [
            "pretrain", str(ROOT / "pipelines" / "fashion_mnist" / "simclr.yaml"),
            "--data", str(images), "--batch-size", "8", "--max-steps", "2",
            "--accelerator", "cpu", "--precision", "32", "--num-workers", "0",
            "--out", str(out), "--set", "method_kwargs.backbone=resnet18",
        ]
    )  # fmt: skip
    assert code == 0
    # One NT-Xent per training step, through the eager-sum kernel.
    assert kernel_calls["_lse_sum_op"] == 2, kernel_calls
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
