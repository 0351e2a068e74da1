from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from lightly.loss import DetConBLoss as LightlyDetConBLoss
from lightly.loss import DetConSLoss as LightlyDetConSLoss
from torch.nn import functional as F

from fastssl.loss import DetConBLoss, DetConSLoss
from fastssl.loss.detcon_loss import detcon_loss
from fastssl.utils import dist
from tests._distributed import run_distributed

Inputs = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]


def _inputs(b: int, m: int, d: int, num_ids: int, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(b, m, d, generator=g).requires_grad_() for _ in range(4)]
    masks = torch.randint(0, num_ids, (2, b, m), generator=g)
    return views, masks[0], masks[1]


def _value_and_grads(loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return [loss.detach(), *torch.autograd.grad(loss, leaves)]


def _assert_all_close(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    # atol: the kernel's softmax is exp(logit - lse) with lse rounded, so a query whose
    # only key is its positive gets a gradient of ~1e-6 * |1 / temperature| instead of 0.
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


SHAPES = [(1, 1, 4, 2), (2, 3, 8, 3), (3, 6, 5, 10), (5, 2, 3, 1)]


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize(("b", "m", "d", "num_ids"), SHAPES)
@pytest.mark.parametrize("temperature", [0.1, -0.3])
def test_detconb_matches_lightly(b: int, m: int, d: int, num_ids: int, temperature: float) -> None:
    views, mask0, mask1 = _inputs(b, m, d, num_ids, seed=b * m)
    ours = DetConBLoss(temperature, gather_distributed=False)(*views, mask0, mask1)
    theirs = LightlyDetConBLoss(temperature, gather_distributed=False)(*views, mask0, mask1)
    _assert_all_close(_value_and_grads(ours, views), _value_and_grads(theirs, views))


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize(("b", "m", "d", "num_ids"), SHAPES)
def test_detcons_matches_lightly(b: int, m: int, d: int, num_ids: int) -> None:
    views, mask0, mask1 = _inputs(b, m, d, num_ids, seed=b + m)
    args = (views[0], views[1], mask0, mask1)
    # gather_distributed=True (the default) is a no-op in one process.
    ours = DetConSLoss(0.2)(*args)
    theirs = LightlyDetConSLoss(0.2)(*args)
    _assert_all_close(_value_and_grads(ours, views[:2]), _value_and_grads(theirs, views[:2]))


def _naive_detcon_direction(
    pred: torch.Tensor,
    own_target: torch.Tensor,
    other_target: torch.Tensor,
    own_mask: torch.Tensor,
    other_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """The DetCon cross-entropy of one direction, query by query (Hénaff et al., Eq. 2)."""
    b, m, _ = pred.shape
    p = F.normalize(pred, dim=-1)
    t_own, t_other = F.normalize(own_target, dim=-1), F.normalize(other_target, dim=-1)
    total = torch.zeros(())
    for img in range(b):
        for i in range(m):
            logits, positives = [], []
            for other_img in range(b):
                for j in range(m):
                    logit = torch.dot(p[img, i], t_other[other_img, j]) / temperature
                    logits.append(logit)
                    if other_img == img and other_mask[img, j] == own_mask[img, i]:
                        positives.append(logit)
                    same_region = other_img == img and own_mask[img, j] == own_mask[img, i]
                    if not same_region:  # regions of the own view under the own mask: out
                        logits.append(torch.dot(p[img, i], t_own[other_img, j]) / temperature)
            if not positives:
                continue
            lse = torch.logsumexp(torch.stack(logits), dim=0)
            repeats = int((own_mask[img] == own_mask[img, i]).sum())
            total = total + (lse - torch.stack(positives).mean()) / repeats
    return total / (b * m)


@pytest.mark.usefixtures("loss_path")
@pytest.mark.parametrize(("b", "m", "num_ids"), [(2, 3, 2), (3, 4, 3), (1, 5, 2)])
def test_matches_naive_loop(b: int, m: int, num_ids: int) -> None:
    views, mask0, mask1 = _inputs(b, m, 4, num_ids, seed=7 * b + m)
    p0, p1, t0, t1 = views
    expected = _naive_detcon_direction(p0, t0, t1, mask0, mask1, 0.3)
    expected = expected + _naive_detcon_direction(p1, t1, t0, mask1, mask0, 0.3)
    loss = detcon_loss(*views, mask0, mask1, temperature=0.3, gather_distributed=False)
    _assert_all_close(_value_and_grads(loss, views), _value_and_grads(expected, views))


def test_regions_without_positive_count_zero() -> None:
    # Mask ids of view 1 never occur in view 0 and vice versa: no positives, loss 0.
    views, _, _ = _inputs(3, 4, 5, 2)
    mask0, mask1 = torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long)
    loss = detcon_loss(*views, mask0, mask1, gather_distributed=False)
    assert loss.item() == 0.0


def test_closed_form_for_orthogonal_images() -> None:
    # One object per image, identical unit features in both views, orthogonal images: each
    # query has logit 1/t with its positive and 0 with the 2 * (B - 1) other-image regions.
    b, t = 4, 0.5
    features = torch.eye(b).unsqueeze(1)  # (B images, 1 region, B dims)
    masks = torch.zeros(b, 1, dtype=torch.long)
    loss = detcon_loss(features, features, features, features, masks, masks, t, False)
    expected = 2 * math.log(1 + 2 * (b - 1) * math.exp(-1 / t))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 3, 7])
def test_fused_and_reference_paths_agree(m: int) -> None:
    views, mask0, mask1 = _inputs(4, m, 6, 3, seed=m)
    fused = detcon_loss(*views, mask0, mask1, gather_distributed=False, fused=True)
    reference = detcon_loss(*views, mask0, mask1, gather_distributed=False, fused=False)
    _assert_all_close(_value_and_grads(fused, views), _value_and_grads(reference, views))


@pytest.mark.compile
def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    views, mask0, mask1 = _inputs(3, 4, 5, 3)
    loss_fn = DetConBLoss(0.2, gather_distributed=False)
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    _assert_all_close(
        _value_and_grads(compiled(*views, mask0, mask1), views),
        _value_and_grads(loss_fn(*views, mask0, mask1), views),
    )


def test_rejects_bad_arguments() -> None:
    views, mask0, mask1 = _inputs(2, 3, 4, 2)
    with pytest.raises(ValueError, match=r"abs\(temperature\) must be >= 1e-8"):
        DetConBLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"abs\(temperature\) must be >= 1e-8"):
        DetConSLoss(temperature=1e-9)
    loss_fn = DetConBLoss(gather_distributed=False)
    with pytest.raises(ValueError, match=r"target_view1=\(2, 3, 5\)"):
        loss_fn(*views[:3], torch.randn(2, 3, 5), mask0, mask1)
    with pytest.raises(ValueError, match=r"\(batch_size, num_masks, dim\)"):
        loss_fn(*(v[0] for v in views), mask0[0], mask1[0])
    with pytest.raises(ValueError, match=r"mask_view1 must have shape .* = \(2, 3\), got \(2, 4\)"):
        loss_fn(*views, mask0, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask_view0 must hold integer mask ids"):
        loss_fn(*views, mask0.float(), mask1)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(DetConBLoss, LightlyDetConBLoss), (DetConSLoss, LightlyDetConSLoss)],
)
def test_same_arguments_as_lightly(ours: type, theirs: type) -> None:
    for method in ("__init__", "forward"):
        mine = inspect.signature(getattr(ours, method)).parameters
        peer = inspect.signature(getattr(theirs, method)).parameters
        assert list(mine)[: len(peer)] == list(peer)
        assert [mine[name].default for name in peer] == [p.default for p in peer.values()]


# ----- two processes -------------------------------------------------------------------------

GLOBAL_B, M, D, NUM_IDS = 6, 3, 5, 3


def _global_inputs() -> Inputs:
    return _inputs(GLOBAL_B, M, D, NUM_IDS, seed=11)


def _local(views: list[torch.Tensor], mask0: torch.Tensor, mask1: torch.Tensor) -> Inputs:
    local = GLOBAL_B // dist.world_size()
    rows = slice(dist.rank() * local, (dist.rank() + 1) * local)
    return [v.detach()[rows].clone().requires_grad_() for v in views], mask0[rows], mask1[rows]


def _detcon_worker() -> dict[str, Any]:
    """Per rank: this rank's share of a fixed global batch through ours and LightlySSL's
    losses, for both values of gather_distributed, on both DetCon variants."""
    views, mask0, mask1 = _local(*_global_inputs())
    out: dict[str, Any] = {}
    for gather in (True, False):
        for name, cls in (("ours", DetConBLoss), ("lightly", LightlyDetConBLoss)):
            loss = cls(0.2, gather_distributed=gather)(*views, mask0, mask1)
            out[f"b-{name}-{gather}"] = _value_and_grads(loss, views)
        for name, cls in (("ours", DetConSLoss), ("lightly", LightlyDetConSLoss)):
            loss = cls(0.2, gather_distributed=gather)(views[0], views[1], mask0, mask1)
            out[f"s-{name}-{gather}"] = _value_and_grads(loss, views[:2])
    return out


@pytest.mark.dist
def test_two_processes() -> None:
    per_rank = run_distributed(_detcon_worker, 2)
    views, mask0, mask1 = _global_inputs()
    full_b = _value_and_grads(detcon_loss(*views, mask0, mask1, 0.2, False), views)
    full_s = DetConSLoss(0.2, gather_distributed=False)(views[0], views[1], mask0, mask1)
    full_s_grads = _value_and_grads(full_s, views[:2])
    for rank, out in enumerate(per_rank):
        # Both gather options equal LightlySSL's in the same process group.
        for variant in ("b", "s"):
            for gather in (True, False):
                _assert_all_close(
                    out[f"{variant}-ours-{gather}"], out[f"{variant}-lightly-{gather}"]
                )
        # gather_distributed=False: each rank's loss is the one of its own rows alone.
        rows = slice(rank * GLOBAL_B // 2, (rank + 1) * GLOBAL_B // 2)
        local = [v.detach()[rows] for v in views]
        alone = detcon_loss(*local, mask0[rows], mask1[rows], 0.2, False)
        torch.testing.assert_close(out["b-ours-False"][0], alone, rtol=1e-4, atol=1e-6)
    # gather_distributed=True: the rank-mean loss is the full-batch loss, and each rank's
    # input gradient (its rows' share of every rank's loss) is R times the full-batch one.
    for variant, full in (("b", full_b), ("s", full_s_grads)):
        key = f"{variant}-ours-True"
        mean_loss = torch.stack([out[key][0] for out in per_rank]).mean()
        torch.testing.assert_close(mean_loss, full[0], rtol=1e-4, atol=1e-6)
        for i, full_grad in enumerate(full[1:], start=1):
            gathered = torch.cat([out[key][i] for out in per_rank]) / len(per_rank)
            torch.testing.assert_close(gathered, full_grad, rtol=1e-4, atol=1e-6)
