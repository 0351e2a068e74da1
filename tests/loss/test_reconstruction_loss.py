from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss, normalize_patches

B, N, P = 3, 5, 4


def _data(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, N, P, generator=g).requires_grad_()
    target = 3.0 + 2.0 * torch.randn(B, N, P, generator=g)
    mask = torch.rand(B, N, generator=g) < 0.6
    mask[0, 0] = True  # never empty
    return pred, target, mask


def _naive(pred: Tensor, target: Tensor, mask: Tensor | None, loss: str, norm: bool) -> Tensor:
    """MAE's reference formula, one patch at a time."""
    total, weight = torch.zeros(()), torch.zeros(())
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            t = target[b, n]
            if norm:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)  # unbiased
                t = (t - mean) / (var + 1e-6) ** 0.5
            d = pred[b, n] - t
            error = (d**2).mean() if loss == "mse" else d.abs().mean()
            m = torch.tensor(1.0) if mask is None else mask[b, n].float()
            total = total + m * error
            weight = weight + m
    return total / weight


@pytest.mark.parametrize("loss", ["mse", "l1"])
@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("mask_kind", ["bool", "float", "weights", None])
def test_matches_naive_formula_values_and_gradients(
    loss: str, norm_pix_loss: bool, mask_kind: str | None
) -> None:
    pred, target, mask = _data(seed=0)
    mask_arg: Tensor | None = {
        "bool": mask,
        "float": mask.float(),
        "weights": torch.rand(B, N, generator=torch.Generator().manual_seed(1)),
        None: None,
    }[mask_kind]
    value = MaskedReconstructionLoss(loss=loss, norm_pix_loss=norm_pix_loss)(pred, target, mask_arg)
    expected = _naive(pred, target, mask_arg, loss, norm_pix_loss)
    assert value.shape == torch.Size([])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(value, pred)
    (expected_grad,) = torch.autograd.grad(expected, pred)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    if mask_kind in ("bool", "float"):  # visible patches get no gradient
        assert not grad[~mask].any()


@pytest.mark.parametrize(("loss", "torch_loss"), [("mse", nn.MSELoss()), ("l1", nn.L1Loss())])
def test_equals_torch_loss_on_selected_patches(loss: str, torch_loss: nn.Module) -> None:
    """What LightlySSL 1.6's MAE/SimMIM examples compute."""
    pred, target, mask = _data(seed=2)
    value = MaskedReconstructionLoss(loss=loss)(pred, target, mask)
    expected = torch_loss(pred[mask], target[mask])
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(
        torch.autograd.grad(value, pred)[0], torch.autograd.grad(expected, pred)[0]
    )
    torch.testing.assert_close(
        MaskedReconstructionLoss(loss=loss)(pred, target), torch_loss(pred, target)
    )


def test_normalize_patches_is_mae_formula() -> None:
    target = torch.randn(2, 3, 6)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased, as in MAE's reference code
    torch.testing.assert_close(normalize_patches(target), (target - mean) / (var + 1e-6) ** 0.5)
    out = normalize_patches(target)
    torch.testing.assert_close(out.mean(dim=-1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.std(dim=-1), torch.ones(2, 3), atol=1e-4, rtol=0)


def test_target_normalisation_matters() -> None:
    pred, target, mask = _data(seed=3)
    plain = MaskedReconstructionLoss()(pred, target, mask)
    normed = MaskedReconstructionLoss(norm_pix_loss=True)(pred, target, mask)
    assert not torch.allclose(plain, normed)
    # A target that is a per-patch affine map of pred's normalised patches gives 0.
    zero = MaskedReconstructionLoss(norm_pix_loss=True)(
        normalize_patches(target), 5.0 + 2.0 * target, mask
    )
    torch.testing.assert_close(zero, torch.tensor(0.0), atol=1e-5, rtol=0)


def test_empty_mask_gives_zero_not_nan() -> None:
    pred, target, _ = _data(seed=4)
    value = MaskedReconstructionLoss()(pred, target, torch.zeros(B, N, dtype=torch.bool))
    assert value.item() == 0.0
    (grad,) = torch.autograd.grad(value, pred)
    assert torch.isfinite(grad).all() and not grad.any()


def test_deterministic() -> None:
    pred, target, mask = _data(seed=5)
    loss_fn = MaskedReconstructionLoss(norm_pix_loss=True)
    assert torch.equal(loss_fn(pred, target, mask), loss_fn(pred, target, mask))


def test_bad_arguments_raise() -> None:
    with pytest.raises(
        ValueError, match=re.escape("'loss' must be one of ['mse', 'l1'], got 'l2'")
    ):
        MaskedReconstructionLoss(loss="l2")
    pred, target, mask = _data(seed=6)
    with pytest.raises(ValueError, match=re.escape("got pred (3, 5, 4) and target (3, 5, 3)")):
        MaskedReconstructionLoss()(pred, target[..., :3])
    with pytest.raises(ValueError, match=re.escape("mask of shape (3, 5) (pred without its last")):
        MaskedReconstructionLoss()(pred, target, mask[:, :2])


@pytest.mark.compile
@pytest.mark.parametrize("with_mask", [False, True])
def test_compile_fullgraph_matches_eager(with_mask: bool) -> None:
    torch._dynamo.reset()
    loss_fn = MaskedReconstructionLoss(norm_pix_loss=True)
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    pred, target, mask = _data(seed=7)
    mask_arg = mask if with_mask else None
    value, expected = compiled(pred, target, mask_arg), loss_fn(pred, target, mask_arg)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(
        torch.autograd.grad(value, pred)[0], torch.autograd.grad(expected, pred)[0]
    )
