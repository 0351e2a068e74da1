from __future__ import annotations

import lightly.loss
import pytest
import torch
import torch.nn.functional as F

from fastssl.methods.dcl import DCL, DCLW
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16}


def make(cls: type[DCL] = DCL, **kwargs: object) -> DCL:
    return cls(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def naive_dcl(z0: torch.Tensor, z1: torch.Tensor, t: float, sigma: float | None) -> torch.Tensor:
    """Eq. 6 of the paper for both views: the positive is left out of the denominator."""
    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    n, total = z0.shape[0], torch.zeros(())
    for a, b in ((z0, z1), (z1, z0)):
        for i in range(n):
            w = 1.0
            if sigma is not None:  # DCLW: w = 2 - n * softmax(<a_i, b_j> / sigma)_i
                w = 2 - n * torch.softmax((z0 * z1).sum(1) / sigma, 0)[i]
            negatives = [a[i] @ a[k] for k in range(n) if k != i]
            negatives += [a[i] @ b[k] for k in range(n) if k != i]
            total = total - w * (a[i] @ b[i]) / t + torch.logsumexp(torch.stack(negatives) / t, 0)
    return total / (2 * n)  # averaged over both directions, as LightlySSL does


@pytest.mark.parametrize("cls", [DCL, DCLW])
def test_default_transform_step_trains_every_part(cls: type[DCL]) -> None:
    torch.manual_seed(0)
    check_default_step(make(cls))


@pytest.mark.filterwarnings("ignore:To copy construct:UserWarning:lightly.*")
@pytest.mark.parametrize(("cls", "sigma"), [(DCL, None), (DCLW, 0.5)])
def test_loss_is_decoupled_contrastive_loss(cls: type[DCL], sigma: float | None) -> None:
    torch.manual_seed(0)
    model = make(cls)
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    z0, z1 = model.projection_head(model.backbone(torch.cat([v0, v1]))).chunk(2)
    torch.testing.assert_close(loss, naive_dcl(z0, z1, 0.1, sigma), rtol=1e-4, atol=1e-5)
    oracle = lightly.loss.DCLLoss(0.1) if sigma is None else lightly.loss.DCLWLoss(0.1, sigma)
    torch.testing.assert_close(loss, oracle(z0, z1), rtol=1e-4, atol=1e-5)


def test_defaults() -> None:
    model = DCLW(backbone=tiny_cnn(), input_size=16)
    assert (model.criterion.temperature, model.criterion.sigma) == (0.1, 0.5)  # type: ignore[attr-defined]
    assert model.criterion.gather_distributed
    assert (DCL.name, DCLW.name) == ("dcl", "dclw")


@pytest.mark.parametrize("cls", [DCL, DCLW])
def test_deterministic_under_a_seed(cls: type[DCL]) -> None:
    check_deterministic(lambda: make(cls))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (DCL, {"temperature": 0.0}, "temperature"),
        (DCLW, {"sigma": 0.0}, "sigma"),
        (DCLW, {"num_layers": 1}, "num_layers.*1"),
    ],
)
def test_bad_arguments(cls: type[DCL], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(cls, **kwargs)
