from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules import heads as lightly_heads
from torch import nn

from fastssl.models.modules.heads import clustering
from tests.models.modules.heads._oracle import (
    assert_default_structure,
    assert_matches_lightly,
    build_same_seed,
)

# lightly builds DINO/CAPI heads with the deprecated torch.nn.utils.weight_norm.
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")

SMALL = {"input_dim": 6, "hidden_dim": 8, "output_dim": 5}
DINO_SMALL = SMALL | {"bottleneck_dim": 4, "output_dim": 12}

CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("SwaVProjectionHead", SMALL, (4, 6)),
    ("DINOProjectionHead", DINO_SMALL, (4, 6)),
    (
        "DINOProjectionHead",
        DINO_SMALL | {"batch_norm": True, "freeze_last_layer": 2, "norm_last_layer": False},
        (4, 6),
    ),
    ("DINOv2ProjectionHead", DINO_SMALL, (4, 6)),
    ("DINOv2ProjectionHead", DINO_SMALL | {"batch_norm": True}, (4, 6)),
    ("MSNProjectionHead", SMALL, (4, 6)),
    ("SMoGProjectionHead", SMALL, (4, 6)),
    ("SMoGPredictionHead", SMALL, (4, 6)),
    ("CAPIProjectionHead", {"input_dim": 6, "num_clusters": 9}, (2, 3, 6)),
    (
        "CAPIProjectionHead",
        {"input_dim": 6, "num_clusters": 9, "bias": True, "weight_norm": True},
        (4, 6),
    ),
    ("CAPIProjectionHead", {"input_dim": 6, "num_clusters": 9, "weight_norm": True}, (4, 6)),
    ("SwaVPrototypes", {"input_dim": 6, "n_prototypes": 7}, (4, 6)),
    ("SwaVPrototypes", {"input_dim": 6, "n_prototypes": [3, 7, 2]}, (4, 6)),
]
NAMES = sorted({name for name, _, _ in CASES})


@pytest.mark.parametrize("name", NAMES)
def test_default_architecture_matches_lightly(name: str) -> None:
    assert_default_structure(getattr(clustering, name), getattr(lightly_heads, name))


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_matches_lightly(name: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    ours, theirs = build_same_seed(getattr(clustering, name), getattr(lightly_heads, name), kwargs)
    assert_matches_lightly(ours, theirs, shape)


# --------------------------------------------------------------------------- DINO


def test_dino_init_is_truncated_normal_and_unit_prototypes() -> None:
    torch.manual_seed(0)
    head = clustering.DINOProjectionHead(256, 512, 64, 100)
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    weights = torch.cat([lin.weight.flatten() for lin in linears])
    assert abs(weights.std().item() - 0.02) < 1e-3
    assert abs(weights.mean().item()) < 1e-3
    assert all(torch.equal(lin.bias, torch.zeros_like(lin.bias)) for lin in linears)
    assert torch.equal(head.last_layer.weight_g, torch.ones(100, 1))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(100))


def test_dino_init_is_deterministic_under_a_seed() -> None:
    a, b = build_same_seed(clustering.DINOProjectionHead, clustering.DINOProjectionHead, DINO_SMALL)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_norm_last_layer(norm_last_layer: bool) -> None:
    head = clustering.DINOProjectionHead(**DINO_SMALL, norm_last_layer=norm_last_layer)
    assert head.last_layer.weight_g.requires_grad is not norm_last_layer
    assert head.last_layer.weight_v.requires_grad


def test_dino_forward_formula() -> None:
    torch.manual_seed(0)
    head = clustering.DINOProjectionHead(**DINO_SMALL)
    x = torch.randn(3, 6)
    z = nn.functional.normalize(head.layers(x), dim=-1)
    v = head.last_layer.weight_v
    torch.testing.assert_close(head(x), z @ (v / v.norm(dim=1, keepdim=True)).t())


def _dino_trajectory(head: nn.Module, epochs: int, steps: int) -> list[dict[str, torch.Tensor]]:
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9, weight_decay=0.01)
    generator = torch.Generator().manual_seed(3)
    snapshots = []
    for epoch in range(epochs):
        for _ in range(steps):
            head(torch.randn(4, 6, generator=generator)).logsumexp(-1).sum().backward()
            head.cancel_last_layer_gradients(current_epoch=epoch)
            optimizer.step()
            optimizer.zero_grad()
        snapshots.append({k: v.clone() for k, v in head.state_dict().items()})
    return snapshots


def test_dino_last_layer_frozen_for_first_epochs_like_lightly() -> None:
    kwargs = DINO_SMALL | {"freeze_last_layer": 2, "norm_last_layer": False}
    ours, theirs = build_same_seed(
        clustering.DINOProjectionHead, lightly_heads.DINOProjectionHead, kwargs
    )
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    ours_traj = _dino_trajectory(ours, epochs=4, steps=2)
    theirs_traj = _dino_trajectory(theirs, epochs=4, steps=2)
    for epoch, snapshot in enumerate(ours_traj):
        last_changed = not torch.equal(
            snapshot["last_layer.weight_v"], initial["last_layer.weight_v"]
        )
        assert last_changed is (epoch >= 2), epoch
        assert not torch.equal(snapshot["layers.0.weight"], initial["layers.0.weight"])
        for key, value in theirs_traj[epoch].items():
            torch.testing.assert_close(snapshot[key], value, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- SwAV


def test_swav_normalize_gives_unit_prototypes_like_lightly() -> None:
    kwargs = {"input_dim": 6, "n_prototypes": [4, 9]}
    ours, theirs = build_same_seed(clustering.SwaVPrototypes, lightly_heads.SwaVPrototypes, kwargs)
    ours.normalize()  # works outside no_grad
    with torch.no_grad():
        theirs.normalize()
    for head, other in zip(ours.heads, theirs.heads, strict=True):
        torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(head.out_features))
        torch.testing.assert_close(head.weight, other.weight)


def _swav_trajectory(prototypes: nn.Module, steps: int) -> list[bool]:
    optimizer = torch.optim.SGD(prototypes.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(4)
    changed = []
    for step in range(steps):
        before = prototypes.heads[0].weight.clone()
        # The input requires grad so that backward runs while the prototypes are frozen.
        x = torch.randn(4, 6, generator=generator).requires_grad_()
        out = prototypes(x, step=step)
        out.logsumexp(-1).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        changed.append(not torch.equal(before, prototypes.heads[0].weight))
    return changed


@pytest.mark.parametrize("frozen", [0, 3])
def test_swav_prototypes_frozen_for_first_steps_like_lightly(frozen: int) -> None:
    kwargs = {"input_dim": 6, "n_prototypes": 5, "n_steps_frozen_prototypes": frozen}
    ours, theirs = build_same_seed(clustering.SwaVPrototypes, lightly_heads.SwaVPrototypes, kwargs)
    ours_changed = _swav_trajectory(ours, steps=6)
    assert ours_changed == [step >= frozen for step in range(6)]
    assert ours_changed == _swav_trajectory(theirs, steps=6)
    torch.testing.assert_close(ours.heads[0].weight, theirs.heads[0].weight)


def test_swav_frozen_prototypes_need_the_step() -> None:
    prototypes = clustering.SwaVPrototypes(6, 5, n_steps_frozen_prototypes=2)
    with pytest.raises(ValueError, match=r"n_steps_frozen_prototypes is 2 > 0: pass the current"):
        prototypes(torch.randn(2, 6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_prototypes": 0}, r"n_prototypes must be a positive integer, got 0"),
        ({"n_prototypes": []}, r"n_prototypes must be a positive integer or a non-empty list"),
        ({"n_steps_frozen_prototypes": -1}, r"n_steps_frozen_prototypes must be .* got -1"),
    ],
)
def test_swav_prototypes_reject_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        clustering.SwaVPrototypes(**kwargs)


# --------------------------------------------------------------------------- SMoG


def _naive_group_update(features: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    sims = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(features, dim=1).t()
    assignment = sims.argmax(dim=1)
    updated = features.clone()
    for group in range(features.shape[0]):
        members = [x[i] for i in range(x.shape[0]) if assignment[i] == group]
        if members:
            updated[group] = beta * features[group] + (1 - beta) * torch.stack(members).mean(0)
    return updated


@pytest.mark.parametrize(("n_groups", "batch"), [(3, 16), (12, 5)])  # second: empty groups
def test_smog_prototypes_match_lightly_and_the_loop(n_groups: int, batch: int) -> None:
    torch.manual_seed(0)
    features = torch.randn(n_groups, 6)
    ours = clustering.SMoGPrototypes(features.clone(), beta=0.9)
    theirs = lightly_heads.SMoGPrototypes(features.clone(), beta=0.9)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert not ours.group_features.requires_grad
    x = torch.randn(batch, 6)
    torch.testing.assert_close(
        ours(x, features, temperature=0.2), theirs(x, features, temperature=0.2)
    )
    assert torch.equal(ours.assign_groups(x), theirs.assign_groups(x))
    updated = ours.get_updated_group_features(x)
    torch.testing.assert_close(updated, theirs.get_updated_group_features(x))
    torch.testing.assert_close(updated, _naive_group_update(features, x, 0.9))
    ours.set_group_features(updated)
    assert torch.equal(ours.group_features, updated)


def test_smog_prototypes_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"group_features must have shape \(n_groups, dim\)"):
        clustering.SMoGPrototypes(torch.randn(5), beta=0.9)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\], got 1.5"):
        clustering.SMoGPrototypes(torch.randn(2, 5), beta=1.5)


# --------------------------------------------------------------------------- compile


@pytest.mark.compile
def test_dino_head_compiles_without_graph_breaks() -> None:
    torch._dynamo.reset()
    head = clustering.DINOProjectionHead(**DINO_SMALL)
    x = torch.randn(4, 6)
    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), head(x))
