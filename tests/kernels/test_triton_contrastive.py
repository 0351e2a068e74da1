"""Triton kernels of the contrastive log-sum-exp, run by the Triton interpreter on the CPU.

``TRITON_INTERPRET=1`` must be set before ``triton`` is imported, so the checks run in a
fresh subprocess (``_interpreted_checks``) and report their errors back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _interpreted_checks() -> dict[str, float]:
    """Max abs errors of the Triton path vs the reference; runs under TRITON_INTERPRET=1."""
    import torch
    from lightly.loss import DCLLoss, DCLWLoss, NTXentLoss

    from fastssl.kernels import contrastive
    from fastssl.kernels.triton_contrastive import triton_lse
    from fastssl.loss.ntx_ent_loss import ntxent_memory_bank_loss

    assert os.environ.get("TRITON_INTERPRET") == "1"
    errors: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    # Sizes not a multiple of the 32-row / 32-column blocks, d not a power of two.
    for n, m, d, n_ex in [(20, 37, 8, 1), (33, 33, 20, 2), (5, 50, 16, 0)]:
        q = torch.randn(n, d, generator=g).requires_grad_()
        k = torch.randn(m, d, generator=g).requires_grad_()
        exclude = torch.stack([torch.randperm(m, generator=g)[:n_ex] for _ in range(n)])
        weights = torch.randn(n, generator=g)
        ours = triton_lse(q, k, exclude, 0.3)
        ref = contrastive.reference_lse(q, k, exclude, 0.3)
        grads = torch.autograd.grad((ours * weights).sum(), (q, k))
        ref_grads = torch.autograd.grad((ref * weights).sum(), (q, k))
        scale = float(ref.abs().max())
        errors[f"lse {n}x{m}x{d}/{n_ex}"] = float((ours - ref).abs().max()) / scale
        for name, a, b in zip(("dq", "dk"), grads, ref_grads, strict=True):
            errors[f"{name} {n}x{m}x{d}/{n_ex}"] = float((a - b).abs().max() / b.abs().max())

    # The public losses with the Triton backend picked for CPU tensors, against LightlySSL.
    from fastssl import loss as ours

    original = contrastive.pick_backend
    contrastive_any: Any = contrastive
    contrastive_any.pick_backend = lambda q: "triton"
    out0 = torch.randn(19, 12, generator=g, requires_grad=True)
    out1 = torch.randn(19, 12, generator=g, requires_grad=True)
    cases = {
        "ntxent": (ours.NTXentLoss(0.2), NTXentLoss(0.2)),
        "dcl": (ours.DCLLoss(0.1), DCLLoss(0.1)),
        "dclw": (ours.DCLWLoss(0.1), DCLWLoss(0.1)),
    }
    for name, (ours_fn, ref_fn) in cases.items():
        loss = ours_fn(out0, out1)
        ref_loss = ref_fn(out0, out1)
        grads = torch.autograd.grad(loss, (out0, out1))
        ref_grads = torch.autograd.grad(ref_loss, (out0, out1))
        errors[name] = float((loss - ref_loss).abs() / ref_loss.abs())
        for i, (a, b) in enumerate(zip(grads, ref_grads, strict=True)):
            errors[f"{name} grad{i}"] = float((a - b).abs().max() / b.abs().max())
    torch.manual_seed(1)
    ref_bank_loss = NTXentLoss(0.2, memory_bank_size=(40, 12))
    bank = ref_bank_loss.memory_bank.bank.clone()
    loss = ntxent_memory_bank_loss(out0, out1, bank, 0.2)
    errors["ntxent bank"] = float((loss - ref_bank_loss(out0, out1)).abs() / loss.abs())
    contrastive_any.pick_backend = original
    return errors


def test_triton_kernels_under_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = (
        "import json; from tests.kernels.test_triton_contrastive import _interpreted_checks; "
        "print(json.dumps(_interpreted_checks()))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(errors) == 3 * 3 + 3 * 3 + 1  # 3 primitive cases, 3 losses, the bank
    bad = {name: err for name, err in errors.items() if not err <= 1e-4}
    assert not bad, bad


def test_triton_rejects_bad_arguments() -> None:
    torch = pytest.importorskip("torch")
    from fastssl.kernels.triton_contrastive import triton_lse

    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at most 2 columns on Triton, got 3"):
        triton_lse(q, q, torch.zeros(4, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="input_precision must be 'ieee' or 'tf32', got 'fp8'"):
        triton_lse(q, q, torch.zeros(4, 1, dtype=torch.long), 0.5, input_precision="fp8")
