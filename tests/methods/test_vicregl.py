from __future__ import annotations

import lightly.loss
import pytest
import torch

from fastssl.methods.base import StepInfo
from fastssl.methods.vicregl import VICRegL
from fastssl.transforms.vicregl_transform import VICRegLTransform
from tests.methods._method_steps import (
    changed,
    default_views,
    optimizer_step,
    trainable_parameters,
)
from tests.methods._two_view_steps import tiny_cnn

TINY = {"hidden_dim": 32, "output_dim": 32, "local_hidden_dim": 16, "local_output_dim": 16}
INFO = StepInfo(step=0, max_steps=10)


def make(**kwargs: object) -> VICRegL:
    return VICRegL(backbone=tiny_cnn(maps=True), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def views_and_grids(model: VICRegL, batch_size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """Random views and grids of the shapes the model's default transform makes."""
    generator = torch.Generator().manual_seed(seed)
    global_grid, local_grid = model.grid_sizes
    sizes = [(model.input_size, global_grid)] * 2
    sizes += [(model.local_crop_size, local_grid)] * model.n_local_views
    views = [torch.randn(batch_size, 3, s, s, generator=generator) for s, _ in sizes]
    grids = [torch.rand(batch_size, g, g, 2, generator=generator) * 40 for _, g in sizes]
    return views + grids


def test_grid_sizes_are_the_resnet_feature_map_sizes() -> None:
    model = VICRegL(backbone="resnet18", input_size=224, **TINY)  # type: ignore[arg-type]
    assert model.feature_dim == 512 and model.grid_sizes == (7, 3)  # lightly's defaults
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 512)
    transform = model.default_transform()
    assert isinstance(transform, VICRegLTransform)
    out = transform(torch.zeros(3, 256, 256, dtype=torch.uint8))
    assert [tuple(o.shape) for o in out] == [(3, 224, 224)] * 2 + [(7, 7, 2)] * 2


def test_embeddings_are_global_and_per_location() -> None:
    model = make()
    z_global, z_local = model.embed(torch.randn(4, 3, 16, 16))
    assert z_global.shape == (4, 32) and z_local.shape == (4, 8, 8, 16)
    assert model(torch.randn(4, 3, 16, 16)).shape == (4, 8)


@pytest.mark.parametrize("n_local_views", [0, 2])
def test_loss_is_lightlys_vicregl_loss_of_the_embeddings(n_local_views: int) -> None:
    torch.manual_seed(0)
    model = make(n_local_views=n_local_views, alpha=0.6, num_matches=(10, 3))
    batch = views_and_grids(model)
    loss = model.training_step(batch, INFO)
    n = 2 + n_local_views
    features = [model.embed(x) for x in batch[:n]]
    lightly_loss = lightly.loss.VICRegLLoss(alpha=0.6, num_matches=(10, 3))(
        global_view_features=features[:2],
        global_view_grids=batch[n : n + 2],
        local_view_features=features[2:] or None,
        local_view_grids=batch[n + 2 :] or None,
    )
    assert loss.ndim == 0
    torch.testing.assert_close(loss, lightly_loss.reshape(()), rtol=1e-4, atol=1e-5)


def test_default_views_train_every_module() -> None:
    torch.manual_seed(0)
    model = make(n_local_views=2)
    batch = default_views(model, batch_size=4)
    assert [tuple(v.shape[1:]) for v in batch] == (
        [(3, 16, 16)] * 2 + [(3, 7, 7)] * 2 + [(8, 8, 2)] * 2 + [(4, 4, 2)] * 2
    )
    loss, before = optimizer_step(model, batch, INFO)
    assert torch.isfinite(loss)
    # (The heads' last biases get no gradient: VICReg terms do not see a common shift.)
    for module in ("backbone", "projection_head", "local_projection_head"):
        assert changed(model, before, f"{module}."), f"{module} did not move"
    assert len(trainable_parameters(model)) == len(list(model.parameters()))


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses.append(
            torch.stack(
                [optimizer_step(model, views_and_grids(model, seed=s), INFO)[0] for s in (0, 1)]
            )
        )
    assert torch.equal(losses[0], losses[1])


def test_a_short_optimisation_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make()
    batch = views_and_grids(model, batch_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.training_step(batch, INFO)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_wrong_batches_are_named() -> None:
    model = make()
    batch = views_and_grids(model)
    with pytest.raises(ValueError, match=r"2 views and their 2 grids.*got 2 tensors"):
        model.training_step(batch[:2], INFO)
    batch[2] = torch.rand(8, 4, 4, 2)
    with pytest.raises(ValueError, match=r"grid of view 0 is \(4, 4\).*feature map is \(8, 8\)"):
        model.training_step(batch, INFO)


def test_views_overrides_and_the_sizes_the_method_sets() -> None:
    model = make()
    transform = model.default_transform(global_gaussian_blur_prob=0.0)
    assert isinstance(transform, VICRegLTransform)
    with pytest.raises(ValueError, match=r"views\.global_grid_size: .*set by the method"):
        model.default_transform(global_grid_size=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, "alpha.*1.5"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"local_output_dim": 0}, "local_output_dim"),
        ({"n_local_views": -1}, "n_local_views"),
        ({"num_matches": (1, 2, 3)}, "num_matches"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_vision_transformers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"VICRegL needs a convolutional backbone.*vit_b_16"):
        VICRegL(backbone="vit_b_16", input_size=32)
