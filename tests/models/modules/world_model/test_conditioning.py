from __future__ import annotations

import pytest
import torch
from lightly.models.modules.world_model import ActionEncoder as LightlyActionEncoder
from torch import nn

from fastssl.models import modules
from fastssl.models.modules.world_model import ActionEncoder
from tests.models.modules.heads._oracle import assert_matches_lightly, build_same_seed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action_dim": 2, "output_dim": 8},
        {"action_dim": 5, "output_dim": 3, "hidden_dim": 7},
    ],
)
def test_matches_lightly(kwargs: dict[str, int]) -> None:
    ours, theirs = build_same_seed(ActionEncoder, LightlyActionEncoder, kwargs)
    assert_matches_lightly(ours, theirs, (4, 3, kwargs["action_dim"]))
    hidden = kwargs.get("hidden_dim", 4 * kwargs["output_dim"])
    assert ours.mlp[0].out_features == hidden and isinstance(ours.mlp[1], nn.SiLU)
    assert (ours.action_dim, ours.output_dim) == (kwargs["action_dim"], kwargs["output_dim"])
    assert modules.ActionEncoder is ActionEncoder


def test_same_mlp_on_every_timestep() -> None:
    encoder = ActionEncoder(action_dim=3, output_dim=4)
    actions = torch.randn(2, 5, 3)
    out = encoder(actions)
    for t in range(5):
        torch.testing.assert_close(out[:, t], encoder.mlp(actions[:, t]))


def test_errors() -> None:
    with pytest.raises(TypeError):
        ActionEncoder(2, 8)  # type: ignore[misc]  # keyword-only, as in LightlySSL
    with pytest.raises(ValueError, match="'action_dim' must be positive, got 0"):
        ActionEncoder(action_dim=0, output_dim=8)
    with pytest.raises(ValueError, match="'output_dim' must be positive, got -1"):
        ActionEncoder(action_dim=2, output_dim=-1)
    with pytest.raises(ValueError, match=r"\(B, T, action_dim\), got \(4, 2\)"):
        ActionEncoder(action_dim=2, output_dim=8)(torch.randn(4, 2))
