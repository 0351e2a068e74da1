from __future__ import annotations

import copy
import importlib
import math
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fastssl.models import _utils, utils
from fastssl.utils import dist
from tests._distributed import run_distributed


class _LazyLightly:
    """``lightly.models.utils``, imported on first use: the spawned processes of the
    ``dist`` tests import this module and should not pay for importing the oracle."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("lightly.models.utils"), name)


lightly_utils: Any = _LazyLightly()

# ------------------------------------------------------------------------------------------
# Momentum and requires_grad
# ------------------------------------------------------------------------------------------


def _pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(4, 5))  # moves the BatchNorm running stats of `model` only
    return model, ema


@pytest.mark.parametrize("m", [0.0, 0.3, 0.5, 0.9, 0.996, 1.0])
def test_update_momentum_formula_and_lightly(m: float) -> None:
    model, ema = _pair()
    ema_lightly = copy.deepcopy(ema)
    before = [p.clone() for p in ema.parameters()]
    buffers_before = [b.clone() for b in ema.buffers()]
    utils.update_momentum(model, ema, m)
    lightly_utils.update_momentum(model, ema_lightly, m)
    for new, old, p, ref in zip(
        ema.parameters(), before, model.parameters(), ema_lightly.parameters(), strict=True
    ):
        # Exactly the per-parameter lerp, which is the paper's formula up to rounding.
        assert torch.equal(new, torch.lerp(old, p.detach(), 1.0 - m))
        torch.testing.assert_close(new, m * old + (1.0 - m) * p.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(new, ref, rtol=1e-6, atol=1e-7)
    for b, b_old in zip(ema.buffers(), buffers_before, strict=True):
        assert torch.equal(b, b_old)  # buffers are untouched, as in LightlySSL
    if m == 0.0:
        assert all(
            torch.equal(e, p) for e, p in zip(ema.parameters(), model.parameters(), strict=True)
        )
    if m == 1.0:
        assert all(torch.equal(e, o) for e, o in zip(ema.parameters(), before, strict=True))


def test_update_momentum_mixed_dtype_and_no_grad() -> None:
    model, ema = _pair()
    ema = ema.to(torch.bfloat16)
    expected = [
        torch.lerp(e, p.detach().to(torch.bfloat16), 0.1)
        for e, p in zip(ema.parameters(), model.parameters(), strict=True)
    ]
    utils.update_momentum(model, ema, 0.9)
    for e, ref in zip(ema.parameters(), expected, strict=True):
        assert e.dtype == torch.bfloat16 and torch.equal(e, ref)
        assert e.grad_fn is None


@pytest.mark.parametrize(
    ("m", "other", "match"),
    [
        (1.5, None, r"'m' must be in \[0, 1\], got m=1.5"),
        (-0.1, None, r"'m' must be in \[0, 1\], got m=-0.1"),
        (0.9, nn.Linear(5, 7), r"'model' has 6 parameters but 'model_ema' has 2"),
    ],
)
def test_update_momentum_errors(m: float, other: nn.Module | None, match: str) -> None:
    model, ema = _pair()
    with pytest.raises(ValueError, match=match):
        utils.update_momentum(model, other if other is not None else ema, m)


def test_requires_grad_toggles() -> None:
    model, _ = _pair()
    utils.deactivate_requires_grad(model)
    assert not any(p.requires_grad for p in model.parameters())
    utils.activate_requires_grad(model)
    assert all(p.requires_grad for p in model.parameters())


def test_normalize_weight_and_trunc_normal_match_lightly() -> None:
    w = nn.Parameter(torch.randn(6, 4))
    w_ref = nn.Parameter(w.detach().clone())
    for dim in (0, 1):
        utils.normalize_weight(w, dim=dim)
        lightly_utils.normalize_weight(w_ref, dim=dim)
        torch.testing.assert_close(w, w_ref, rtol=1e-6, atol=0)
        torch.testing.assert_close(w.norm(dim=dim), torch.ones(w.shape[1 - dim]))
    a, b = torch.empty(2000), torch.empty(2000)
    torch.manual_seed(3)
    utils._no_grad_trunc_normal(a, mean=0.0, std=0.02, a=-2.0, b=2.0)
    torch.manual_seed(3)
    lightly_utils._no_grad_trunc_normal(b, mean=0.0, std=0.02, a=-2.0, b=2.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    c = torch.empty(2000)
    utils._no_grad_trunc_normal(c, 0.0, 1.0, -0.5, 0.5, generator=torch.Generator().manual_seed(1))
    assert c.abs().max() <= 0.5 and c.std() > 0.2


# ------------------------------------------------------------------------------------------
# Batch shuffling
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_batch_shuffle_inverse_and_lightly(batch_size: int) -> None:
    x = torch.randn(batch_size, 3)
    torch.manual_seed(11)
    shuffled, shuffle = utils.batch_shuffle(x)
    torch.manual_seed(11)
    shuffled_ref, shuffle_ref = lightly_utils.batch_shuffle(x)
    assert torch.equal(shuffle, shuffle_ref) and torch.equal(shuffled, shuffled_ref)
    assert torch.equal(shuffled, x[shuffle])
    assert torch.equal(utils.batch_unshuffle(shuffled, shuffle), x)
    assert torch.equal(
        utils.batch_unshuffle(shuffled, shuffle), lightly_utils.batch_unshuffle(shuffled, shuffle)
    )
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        utils.batch_shuffle(x, generator=g1)[1], utils.batch_shuffle(x, generator=g2)[1]
    )


def test_batch_shuffle_distributed_single_process_is_local_shuffle() -> None:
    x = torch.arange(10.0).unsqueeze(1)
    shuffled, shuffle = utils.batch_shuffle(x, distributed=True)
    assert sorted(shuffled.squeeze(1).tolist()) == x.squeeze(1).tolist()
    assert torch.equal(utils.batch_unshuffle(shuffled, shuffle, distributed=True), x)
    assert torch.equal(utils.concat_all_gather(x), x)


def _shuffle_worker(batch_size: int) -> dict:
    r = dist.rank()
    # Row ids encode (rank, position): rank r owns ids r * batch_size + i.
    x = (torch.arange(batch_size) + r * batch_size).float().unsqueeze(1).repeat(1, 3)
    shuffled, shuffle = utils.batch_shuffle(x, distributed=True)
    restored = utils.batch_unshuffle(shuffled, shuffle, distributed=True)
    g = torch.Generator().manual_seed(100 + r)  # different seeds per rank on purpose
    shuffled_g, shuffle_g = utils.batch_shuffle_distributed(x, generator=g)
    g = torch.Generator().manual_seed(100 + r)
    shuffled_g2, _ = utils.batch_shuffle_distributed(x, generator=g)
    return {
        "ids": shuffled[:, 0].long(),
        "shuffle": shuffle,
        "restored": restored,
        "x": x,
        "ids_g": shuffled_g[:, 0].long(),
        "ids_g2": shuffled_g2[:, 0].long(),
        "restored_g": utils.batch_unshuffle_distributed(shuffled_g, shuffle_g),
        "gathered": utils.concat_all_gather(x),
    }


@pytest.mark.dist
def test_batch_shuffle_distributed_two_processes() -> None:
    n = 8
    out = run_distributed(_shuffle_worker, 2, n)
    # Every rank holds the same global permutation.
    assert torch.equal(out[0]["shuffle"], out[1]["shuffle"])
    for key in ("ids", "ids_g"):
        ids = torch.cat([o[key] for o in out])
        assert sorted(ids.tolist()) == list(range(2 * n))  # each sample exactly once
        # Samples cross ranks (probability of no crossing is 1 / C(16, 8) per call).
        assert (out[0][key] >= n).any() and (out[1][key] < n).any()
    for o in out:
        assert torch.equal(o["restored"], o["x"])
        assert torch.equal(o["restored_g"], o["x"])
        assert torch.equal(o["ids_g"], o["ids_g2"])  # deterministic under the generators
        assert torch.equal(o["gathered"], torch.cat([out[0]["x"], out[1]["x"]]))
        # The returned inverse permutation maps the shuffled global batch back.
        shuffled_global = torch.cat([q["ids"] for q in out])
        assert torch.equal(shuffled_global[o["shuffle"]], torch.arange(2 * n))


# ------------------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------------------


def _token_inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    b, s, d = 3, 6, 4
    index = torch.stack([torch.randperm(s)[:3] for _ in range(b)])
    return {
        "tokens": torch.randn(b, s, d, requires_grad=True),
        "index": index,
        "value": torch.randn(b, 3, d, requires_grad=True),
        "token": torch.randn(1, 1, d, requires_grad=True),
        "mask": torch.rand(b, s) > 0.5,
    }


def _naive_mask_index(t: dict[str, torch.Tensor]) -> torch.Tensor:
    rows = []
    for i in range(t["tokens"].shape[0]):
        seq = [t["tokens"][i, j] for j in range(t["tokens"].shape[1])]
        for j in t["index"][i].tolist():
            seq[j] = t["token"][0, 0]
        rows.append(torch.stack(seq))
    return torch.stack(rows)


def _naive_mask_bool(t: dict[str, torch.Tensor]) -> torch.Tensor:
    b, s, _ = t["tokens"].shape
    return torch.stack(
        [
            torch.stack(
                [t["token"][0, 0] if t["mask"][i, j] else t["tokens"][i, j] for j in range(s)]
            )
            for i in range(b)
        ]
    )


def _naive_set(t: dict[str, torch.Tensor]) -> torch.Tensor:
    out = [list(row) for row in t["tokens"]]
    for i in range(len(out)):
        for k, j in enumerate(t["index"][i].tolist()):
            out[i][j] = t["value"][i, k]
    return torch.stack([torch.stack(r) for r in out])


TOKEN_CASES: dict[
    str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], Callable]
] = {
    "repeat_token": (
        lambda m, t: m.repeat_token(t["token"], (3, 5)),
        lambda t: torch.cat([t["token"]] * 5, 1).expand(3, -1, -1),
        lambda t: None,
    ),
    "get_at_index": (
        lambda m, t: m.get_at_index(t["tokens"], t["index"]),
        lambda t: torch.stack([t["tokens"][i, t["index"][i]] for i in range(3)]),
        lambda t: None,
    ),
    "set_at_index": (
        lambda m, t: m.set_at_index(t["tokens"], t["index"], t["value"]),
        _naive_set,
        lambda t: None,
    ),
    "mask_at_index": (
        lambda m, t: m.mask_at_index(t["tokens"], t["index"], t["token"]),
        _naive_mask_index,
        lambda t: None,
    ),
    "mask_bool": (
        lambda m, t: m.mask_bool(t["tokens"], t["mask"], t["token"]),
        _naive_mask_bool,
        lambda t: None,
    ),
    "prepend_class_token": (
        lambda m, t: m.prepend_class_token(t["tokens"], t["token"]),
        lambda t: torch.cat([t["token"].expand(3, 1, 4), t["tokens"]], 1),
        lambda t: None,
    ),
}


@pytest.mark.parametrize("name", sorted(TOKEN_CASES))
def test_token_functions_values_and_gradients(name: str) -> None:
    ours_fn, naive_fn, _ = TOKEN_CASES[name]
    results = []
    for impl in (utils, lightly_utils, None):
        t = _token_inputs()
        out = naive_fn(t) if impl is None else ours_fn(impl, t)
        weights = torch.arange(out.numel(), dtype=torch.float32).reshape(out.shape)
        (out * weights).sum().backward()
        grads = [t[k].grad for k in ("tokens", "value", "token")]
        results.append((out.detach(), grads))
    (ours, g_ours), (ref, g_ref), (naive, g_naive) = results
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=0)
    torch.testing.assert_close(ours, naive, rtol=1e-4, atol=0)
    for a, b, c in zip(g_ours, g_ref, g_naive, strict=True):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_expand_index_like_and_mask_at_index_ignores_nan() -> None:
    t = _token_inputs()
    assert torch.equal(
        utils.expand_index_like(t["index"], t["tokens"]),
        lightly_utils.expand_index_like(t["index"], t["tokens"]),
    )
    tokens = t["tokens"].detach().clone()
    tokens[0, t["index"][0, 0]] = float("nan")
    out = utils.mask_at_index(tokens, t["index"], t["token"].detach())
    assert not out.isnan().any()  # LightlySSL gives NaN here: 0 * NaN


@pytest.mark.parametrize(
    ("size", "patch"), [((2, 3, 16, 16), 4), ((1, 1, 8, 8), 8), ((2, 2, 12, 12), 3)]
)
def test_patchify_matches_lightly_and_round_trips(size: tuple[int, ...], patch: int) -> None:
    images = torch.randn(size)
    patches = utils.patchify(images, patch)
    assert torch.equal(patches, lightly_utils.patchify(images, patch))
    n, c, h, w = size
    assert patches.shape == (n, (h // patch) * (w // patch), patch * patch * c)
    # Naive: patch k = row * grid + col, flattened as (p, q, c).
    grid = w // patch
    k = grid + 1
    naive = images[0, :, patch : 2 * patch, patch : 2 * patch].permute(1, 2, 0).reshape(-1)
    if h // patch > 1:
        assert torch.equal(patches[0, k], naive)
    back = utils.unpatchify(patches, patch, channels=c)
    assert torch.equal(back, images)
    assert torch.equal(back, lightly_utils.unpatchify(patches, patch, channels=c))


def test_patchify_rectangular_and_errors() -> None:
    images = torch.randn(2, 3, 8, 12)
    patches = utils.patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    with pytest.raises(
        ValueError, match=r"image size 8x12 must be a multiple of 'patch_size', got patch_size=5"
    ):
        utils.patchify(images, 5)
    with pytest.raises(ValueError, match="number of patches must be a perfect square, got 6"):
        utils.unpatchify(patches, 4)
    with pytest.raises(
        ValueError, match=r"patch dimension 48 does not match patch_size=4 and channels=1"
    ):
        utils.unpatchify(torch.zeros(1, 4, 48), 4, channels=1)


# ------------------------------------------------------------------------------------------
# Random masks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_class_token", [False, True])
@pytest.mark.parametrize(("seq", "ratio"), [(17, 0.75), (10, 0.6), (5, 0.0), (5, 1.0), (1, 0.5)])
def test_random_token_mask(seq: int, ratio: float, mask_class_token: bool) -> None:
    size = (4, seq)
    torch.manual_seed(2)
    keep, mask = utils.random_token_mask(size, ratio, mask_class_token)
    torch.manual_seed(2)
    keep_ref, mask_ref = lightly_utils.random_token_mask(size, ratio, mask_class_token)
    assert torch.equal(keep, keep_ref) and torch.equal(mask, mask_ref)
    maskable = seq - (0 if mask_class_token else 1)
    num_keep = int(maskable * (1 - ratio)) + (0 if mask_class_token else 1)
    num_keep = num_keep if mask_class_token else max(1, num_keep)
    assert keep.shape == (4, num_keep) and mask.shape == (4, seq - num_keep)
    for row_keep, row_mask in zip(keep.tolist(), mask.tolist(), strict=True):
        assert sorted(row_keep + row_mask) == list(range(seq))
        if not mask_class_token:
            assert row_keep[0] == 0
    g = [torch.Generator().manual_seed(9) for _ in range(2)]
    a = utils.random_token_mask(size, ratio, mask_class_token, generator=g[0])
    b = utils.random_token_mask(size, ratio, mask_class_token, generator=g[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_random_token_mask_error() -> None:
    with pytest.raises(ValueError, match=r"'mask_ratio' must be in \[0, 1\], got 1.5"):
        utils.random_token_mask((2, 4), mask_ratio=1.5)


@pytest.mark.parametrize(("seq", "max_prefix"), [(16, 15), (8, 1), (8, 8)])
def test_random_prefix_mask(seq: int, max_prefix: int) -> None:
    torch.manual_seed(4)
    mask = utils.random_prefix_mask((64, seq), max_prefix)
    torch.manual_seed(4)
    assert torch.equal(mask, lightly_utils.random_prefix_mask((64, seq), max_prefix))
    assert mask.shape == (64, seq) and mask.dtype == torch.bool
    # Prefix property: once masked, every later token is masked.
    assert torch.equal(mask, mask.cummax(dim=1).values)
    prefix = (~mask).sum(dim=1)
    assert prefix.min() >= 0 and prefix.max() < max_prefix
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(
        utils.random_prefix_mask((64, seq), max_prefix, generator=g[0]),
        utils.random_prefix_mask((64, seq), max_prefix, generator=g[1]),
    )
    with pytest.raises(ValueError, match="'max_prefix_length' must be >= 1, got 0"):
        utils.random_prefix_mask((2, seq), 0)


@pytest.mark.parametrize(
    ("batch", "ratio", "lo", "hi"), [(8, 0.5, 0.1, 0.5), (5, 1.0, 0.3, 0.3), (4, 0.0, 0.1, 0.5)]
)
def test_random_block_mask(batch: int, ratio: float, lo: float, hi: float) -> None:
    h = w = 14
    masks = utils.random_block_mask(
        (batch, h, w), ratio, lo, hi, generator=torch.Generator().manual_seed(0)
    )
    assert masks.shape == (batch, h, w) and masks.dtype == torch.bool
    counts = masks.sum(dim=(1, 2))
    num_masked_images = int(batch * ratio)
    assert (counts == 0).sum() >= batch - num_masked_images
    assert counts.max() <= int(h * w * hi)
    if num_masked_images:
        assert (counts > 0).sum() == num_masked_images
    again = utils.random_block_mask(
        (batch, h, w), ratio, lo, hi, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(masks, again)


def test_random_block_mask_image_and_errors() -> None:
    g = torch.Generator().manual_seed(0)
    mask = utils.random_block_mask_image((14, 14), num_masks=60, generator=g)
    assert 0 < mask.sum() <= 60
    with pytest.raises(
        ValueError,
        match=r"'max_image_mask_ratio' \(0.1\) must be >= 'min_image_mask_ratio' \(0.5\)",
    ):
        utils.random_block_mask((2, 4, 4), min_image_mask_ratio=0.5, max_image_mask_ratio=0.1)
    with pytest.raises(
        ValueError,
        match=r"'max_num_masks_per_block' \(2\) must be >= 'min_num_masks_per_block' \(4\)",
    ):
        utils.random_block_mask_image((4, 4), num_masks=2)
    with pytest.raises(
        ValueError,
        match=r"'max_block_aspect_ratio' \(0.5\) must be >= 'min_block_aspect_ratio' \(2.0\)",
    ):
        utils.random_block_mask_image(
            (4, 4), 8, min_block_aspect_ratio=2.0, max_block_aspect_ratio=0.5
        )


# ------------------------------------------------------------------------------------------
# Dense features
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduce", ["mean", "sum", "amax", "amin", "prod"])
def test_pool_masked(reduce: str) -> None:
    torch.manual_seed(0)
    source = torch.randn(2, 3, 4, 5)
    mask = torch.randint(0, 3, (2, 4, 5))
    mask[1][mask[1] == 2] = 0  # class 2 empty in the second image
    num_cls = 4  # class 3 empty everywhere
    out = utils.pool_masked(source, mask, num_cls, reduce=reduce)
    naive = torch.zeros(2, 3, num_cls)
    ops = {
        "mean": torch.mean,
        "sum": torch.sum,
        "prod": torch.prod,
        "amax": torch.amax,
        "amin": torch.amin,
    }
    for b in range(2):
        for k in range(num_cls):
            sel = mask[b] == k
            if sel.any():
                naive[b, :, k] = ops[reduce](source[b][:, sel], dim=1)
    torch.testing.assert_close(out, naive, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(utils.pool_masked(source[0], mask[0], num_cls, reduce), naive[0])
    if reduce == "mean":  # LightlySSL's batched path always averages
        torch.testing.assert_close(
            out, lightly_utils.pool_masked(source, mask, num_cls), rtol=1e-4, atol=1e-6
        )


def test_pool_masked_errors() -> None:
    with pytest.raises(ValueError, match=r"'reduce' must be one of .*got 'median'"):
        utils.pool_masked(
            torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 1, "median"
        )
    with pytest.raises(ValueError, match=r"'source' must have shape .*got \(2, 2\)"):
        utils.pool_masked(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), 1)


@pytest.mark.parametrize("num_matches", [2, 5, 20, -1, None])
def test_nearest_neighbors(num_matches: int | None) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 6, 3), torch.randn(2, 5, 3)
    distances = torch.cdist(x, y)
    ours = utils.nearest_neighbors(x, y, distances, num_matches)
    ref = lightly_utils.nearest_neighbors(x, y, distances, num_matches)  # type: ignore[arg-type]
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    k = 6 if num_matches in (None, -1) or num_matches > 6 else num_matches
    for b in range(2):
        pairs = sorted(
            (distances[b, i].min().item(), i, distances[b, i].argmin().item()) for i in range(6)
        )[:k]
        assert torch.equal(ours[0][b], x[b, [i for _, i, _ in pairs]])
        assert torch.equal(ours[1][b], y[b, [j for _, _, j in pairs]])


def test_most_similar() -> None:
    torch.manual_seed(0)
    x, y, values = torch.randn(2, 5, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 3)
    index = utils.most_similar_index(x, y)
    assert torch.equal(index, lightly_utils.most_similar_index(x, y))
    cos = nn.functional.cosine_similarity(x.unsqueeze(2), y.unsqueeze(1), dim=-1)
    assert torch.equal(index, cos.argmax(dim=2))
    # LightlySSL's select_most_similar expands the index to y_values' shape, so it needs
    # as many x as y rows; compare against the naive loop for the general case.
    selected = utils.select_most_similar(x, y, values)
    assert torch.equal(selected, torch.stack([values[b, index[b]] for b in range(2)]))
    sq = torch.randn(2, 7, 4)
    assert torch.equal(
        utils.select_most_similar(sq, y, values), lightly_utils.select_most_similar(sq, y, values)
    )


@pytest.mark.parametrize("decay_norm", [False, True])
@pytest.mark.parametrize("decay_bias", [False, True])
def test_get_weight_decay_parameters(decay_norm: bool, decay_bias: bool) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.LayerNorm(4),
        nn.Linear(4, 2, bias=False),
        nn.GroupNorm(2, 4),
    )
    head = nn.Linear(2, 2)
    ours = utils.get_weight_decay_parameters([model, head], decay_norm, decay_bias)
    ref = lightly_utils.get_weight_decay_parameters([model, head], decay_norm, decay_bias)
    for a, b in zip(ours, ref, strict=True):
        assert [id(p) for p in a] == [id(p) for p in b]
    n_norm, n_bias = 6, 2  # 3 norm layers x (weight, bias); conv and head biases
    assert len(ours[1]) == (0 if decay_norm else n_norm) + (0 if decay_bias else n_bias)


# ------------------------------------------------------------------------------------------
# Positional embeddings and normalization
# ------------------------------------------------------------------------------------------


def _mae_sincos(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE's embedding written from the formula, one entry at a time."""
    out = np.zeros((grid_size * grid_size, embed_dim))
    quarter = embed_dim // 4
    for row in range(grid_size):
        for col in range(grid_size):
            for i in range(quarter):
                w = 1.0 / 10000 ** (i / quarter)
                k = row * grid_size + col
                out[k, i] = math.sin(col * w)
                out[k, quarter + i] = math.cos(col * w)
                out[k, 2 * quarter + i] = math.sin(row * w)
                out[k, 3 * quarter + i] = math.cos(row * w)
    return out


@pytest.mark.parametrize(
    ("dim", "grid", "cls", "prefix"),
    [(16, 4, True, None), (8, 3, False, None), (32, 2, True, 3), (12, 5, False, 0)],
)
def test_sine_cosine_embedding(dim: int, grid: int, cls: bool, prefix: int | None) -> None:
    ours = utils.get_2d_sine_cosine_positional_embedding(dim, grid, cls, prefix)
    ref = lightly_utils.get_2d_sine_cosine_positional_embedding(dim, grid, cls, prefix)
    n_prefix = int(cls) if prefix is None else prefix
    assert ours.shape == (n_prefix + grid * grid, dim) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours[n_prefix:], _mae_sincos(dim, grid), rtol=1e-5, atol=1e-6)
    assert not ours[:n_prefix].any()
    assert utils.get_2d_sincos_pos_embed is utils.get_2d_sine_cosine_positional_embedding


def test_sine_cosine_embedding_error() -> None:
    with pytest.raises(ValueError, match=r"'embed_dim' must be a multiple of 4 .*got 6"):
        utils.get_2d_sine_cosine_positional_embedding(6, 2)


@pytest.mark.parametrize("strategy", ["learn", "sincos", "skip"])
def test_initialize_positional_embedding(strategy: str) -> None:
    pos = nn.Parameter(torch.full((1, 2 + 9, 8), 7.0))
    ref = nn.Parameter(pos.detach().clone())
    torch.manual_seed(0)
    utils.initialize_positional_embedding(pos, strategy, num_prefix_tokens=2)
    torch.manual_seed(0)
    lightly_utils.initialize_positional_embedding(ref, strategy, num_prefix_tokens=2)
    torch.testing.assert_close(pos, ref, rtol=1e-4, atol=1e-6)
    assert pos.requires_grad == ref.requires_grad == (strategy != "sincos")
    if strategy == "sincos":
        np.testing.assert_allclose(
            pos[0, 2:].detach().numpy(), _mae_sincos(8, 3), rtol=1e-5, atol=1e-6
        )
    if strategy == "learn":
        assert pos.abs().max() <= 2.0 and 0.005 < pos.std() < 0.05


def test_initialize_2d_sine_cosine_has_class_token_and_errors() -> None:
    pos, ref = nn.Parameter(torch.zeros(1, 17, 8)), nn.Parameter(torch.zeros(1, 17, 8))
    utils.initialize_2d_sine_cosine_positional_embedding(pos, has_class_token=True)
    lightly_utils.initialize_2d_sine_cosine_positional_embedding(ref, has_class_token=True)
    torch.testing.assert_close(pos, ref)
    with pytest.raises(
        ValueError, match="sequence length 17 minus 0 prefix tokens is not a square"
    ):
        utils.initialize_2d_sine_cosine_positional_embedding(pos, has_class_token=False)
    with pytest.raises(
        ValueError, match=r"'strategy' must be one of \['learn', 'sincos', 'skip'\]"
    ):
        utils.initialize_positional_embedding(pos, "random", 1)


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_normalize_mean_var(dim: int) -> None:
    x = torch.randn(4, 5, 6) * 3 + 1
    out = utils.normalize_mean_var(x, dim=dim)
    torch.testing.assert_close(
        out, lightly_utils.normalize_mean_var(x, dim=dim), rtol=1e-4, atol=1e-6
    )
    naive = (x - x.mean(dim, keepdim=True)) / torch.sqrt(
        x.var(dim, keepdim=True, unbiased=True) + 1e-6
    )
    torch.testing.assert_close(out, naive, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# The public module re-exports the private ones
# ------------------------------------------------------------------------------------------


def test_every_public_helper_is_reexported() -> None:
    """A helper added to ``fastssl/models/_utils/`` is reachable at LightlySSL's path."""
    for info in pkgutil.iter_modules(_utils.__path__):
        module = importlib.import_module(f"fastssl.models._utils.{info.name}")
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and callable(value)
            and getattr(value, "__module__", None) == module.__name__
        }
        assert public <= set(utils.__all__), sorted(public - set(utils.__all__))
    for name in utils.__all__:
        assert getattr(utils, name) is not None


# ------------------------------------------------------------------------------------------
# Grid and inverse-block masks (Pixio, CAPI)
# ------------------------------------------------------------------------------------------


def _check_split(keep: torch.Tensor, mask: torch.Tensor, seq: int, prefix: int) -> None:
    """Every row: prefix tokens first in keep, keep + mask is a permutation of all tokens."""
    assert keep.dtype == mask.dtype == torch.int64
    for row_keep, row_mask in zip(keep.tolist(), mask.tolist(), strict=True):
        assert row_keep[:prefix] == list(range(prefix))
        assert sorted(row_keep + row_mask) == list(range(seq))


@pytest.mark.parametrize(
    ("side", "grid", "prefix", "ratio"),
    [(8, 4, 1, 0.75), (8, 2, 0, 0.5), (12, 3, 2, 0.6), (4, 4, 1, 0.0), (4, 2, 1, 1.0)],
)
def test_random_grid_token_mask(side: int, grid: int, prefix: int, ratio: float) -> None:
    size = (6, prefix + side * side)
    torch.manual_seed(3)
    keep, mask = utils.random_grid_token_mask(size, ratio, grid, prefix)
    torch.manual_seed(3)
    keep_ref, mask_ref = lightly_utils.random_grid_token_mask(size, ratio, grid, prefix)
    assert torch.equal(keep, keep_ref) and torch.equal(mask, mask_ref)
    num_cells = (side // grid) ** 2
    num_keep = int(num_cells * (1 - ratio)) * grid * grid
    assert keep.shape == (6, prefix + num_keep) and mask.shape == (6, side * side - num_keep)
    _check_split(keep, mask, size[1], prefix)
    # Whole cells are kept or masked: map every patch to its cell.
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    cell_of = ((rows // grid) * (side // grid) + cols // grid).flatten()
    for row_keep in keep[:, prefix:]:
        cells = cell_of[row_keep - prefix].unique()
        assert len(cells) * grid * grid == num_keep
    g = [torch.Generator().manual_seed(5) for _ in range(2)]
    a = utils.random_grid_token_mask(size, ratio, grid, prefix, generator=g[0])
    b = utils.random_grid_token_mask(size, ratio, grid, prefix, generator=g[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_random_grid_token_mask_is_uniform_over_cells() -> None:
    keep, _ = utils.random_grid_token_mask(
        (4000, 1 + 64), 0.75, 4, 1, generator=torch.Generator().manual_seed(0)
    )
    cells = ((keep[:, 1:] - 1) // 8 // 4) * 2 + ((keep[:, 1:] - 1) % 8) // 4  # 2x2 cells
    frequency = torch.bincount(cells[:, 0], minlength=4) / 4000  # one kept cell per row
    torch.testing.assert_close(frequency, torch.full((4,), 0.25), atol=0.03, rtol=0)


def test_random_grid_token_mask_errors() -> None:
    with pytest.raises(ValueError, match="greater than num_prefix_tokens"):
        utils.random_grid_token_mask((2, 1), num_prefix_tokens=1)
    with pytest.raises(ValueError, match="perfect square"):
        utils.random_grid_token_mask((2, 1 + 15))
    with pytest.raises(ValueError, match=r"divisible by 'grid_size' \(4\)"):
        utils.random_grid_token_mask((2, 1 + 36), grid_size=4)
    with pytest.raises(ValueError, match=r"'mask_ratio' must be in \[0, 1\]"):
        utils.random_grid_token_mask((2, 1 + 16), mask_ratio=1.2)


@pytest.mark.parametrize(
    ("side", "prefix", "ratio", "min_aspect", "max_aspect", "roll"),
    [
        (14, 1, 0.65, 0.5, None, True),
        (8, 0, 0.5, 0.3, None, False),
        (8, 2, 0.9, 0.5, 4.0, True),
        (6, 1, 0.0, 0.5, None, True),
        (6, 1, 1.0, 0.5, None, True),
    ],
)
def test_random_inverse_block_mask(
    side: int, prefix: int, ratio: float, min_aspect: float, max_aspect: float | None, roll: bool
) -> None:
    size = (6, prefix + side * side)
    args = (ratio, prefix, min_aspect, max_aspect, roll)
    torch.manual_seed(7)
    keep, mask = utils.random_inverse_block_mask(size, *args)
    torch.manual_seed(7)
    keep_ref, mask_ref = lightly_utils.random_inverse_block_mask(size, *args)
    assert torch.equal(keep, keep_ref) and torch.equal(mask, mask_ref)
    num_masked = int(side * side * ratio)
    assert keep.shape == (6, prefix + side * side - num_masked)
    assert mask.shape == (6, num_masked)
    _check_split(keep, mask, size[1], prefix)
    assert torch.equal(keep[:, prefix:], keep[:, prefix:].sort(dim=1).values)
    g = [torch.Generator().manual_seed(5) for _ in range(2)]
    a = utils.random_inverse_block_mask(size, *args, generator=g[0])
    b = utils.random_inverse_block_mask(size, *args, generator=g[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_random_inverse_block_mask_is_a_block_without_roll() -> None:
    """Unrolled, the visible patches are the first ones, row by row, of a rectangle whose
    aspect ratio lies in the allowed range."""
    side, num_visible = 10, 30
    keep, _ = utils.random_inverse_block_mask(
        (200, side * side), mask_ratio=0.7, num_prefix_tokens=0, roll=False,
        min_aspect=0.5, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    heights = []
    for row in keep:
        r, c = row // side, row % side
        top, left = int(r.min()), int(c.min())
        height, width = int(r.max()) - top + 1, int(c.max()) - left + 1
        block = [(top + i // width) * side + left + i % width for i in range(num_visible)]
        assert row.tolist() == sorted(block)
        heights.append(height)
        assert height * width >= num_visible
    # Aspect ratios in [0.5, 2] give heights between 4 and 8 for 30 patches; both ways occur.
    assert 4 <= min(heights) < max(heights) <= 8


def test_random_inverse_block_mask_roll_covers_every_position() -> None:
    keep, _ = utils.random_inverse_block_mask(
        (3000, 1 + 64), mask_ratio=0.75, generator=torch.Generator().manual_seed(0)
    )
    frequency = torch.bincount(keep[:, 1:].flatten() - 1, minlength=64) / 3000
    torch.testing.assert_close(frequency, torch.full((64,), 0.25), atol=0.04, rtol=0)


def test_random_inverse_block_mask_errors() -> None:
    with pytest.raises(ValueError, match="perfect square"):
        utils.random_inverse_block_mask((2, 1 + 10))
    with pytest.raises(ValueError, match="greater than num_prefix_tokens"):
        utils.random_inverse_block_mask((2, 2), num_prefix_tokens=2)


# ------------------------------------------------------------------------------------------
# I-JEPA token helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_masks", [0, 1, 3])
def test_apply_masks(num_masks: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10, 6, generator=generator)
    # The first mask differs per sample, the others are shared by the batch.
    per_sample = torch.stack([torch.randperm(10, generator=generator)[:5] for _ in range(4)])
    shared = [torch.randperm(10, generator=generator)[:5].expand(4, -1) for _ in range(2)]
    masks = [per_sample, *shared]
    arg: torch.Tensor | list[torch.Tensor] = masks[0] if num_masks == 0 else masks[:num_masks]
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = utils.apply_masks(x_ours, arg)
    ref = lightly_utils.apply_masks(x_ref, arg)
    assert out.shape == (4 * max(num_masks, 1), 5, 6)
    assert torch.equal(out, ref)
    expected = torch.cat(
        [torch.stack([x[b, m[b]] for b in range(4)]) for m in masks[: max(num_masks, 1)]]
    )
    assert torch.equal(out, expected)
    weight = torch.randn(out.shape, generator=generator)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    with pytest.raises(ValueError, match="at least one mask"):
        utils.apply_masks(x, [])


@pytest.mark.parametrize(("n", "batch", "repeat"), [(6, 2, 3), (6, 3, 1), (7, 2, 2), (4, 4, 2)])
def test_repeat_interleave_batch(n: int, batch: int, repeat: int) -> None:
    x = torch.arange(n * 2.0).view(n, 2)
    out = utils.repeat_interleave_batch(x, batch, repeat)
    assert torch.equal(out, lightly_utils.repeat_interleave_batch(x, batch, repeat))
    chunks = [x[i * batch : (i + 1) * batch] for i in range(n // batch)]
    assert torch.equal(out, torch.cat([c for c in chunks for _ in range(repeat)]))


@pytest.mark.parametrize("reduce", ["mean", "sum", "amax", "amin", "prod"])
def test_private_mask_reduce_matches_lightly(reduce: str) -> None:
    torch.manual_seed(0)
    source, mask = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    out = utils._mask_reduce_batched(source, mask, 4, reduce)
    torch.testing.assert_close(
        out, lightly_utils._mask_reduce_batched(source, mask, 4, reduce), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        utils._mask_reduce(source[1], mask[1], 4, reduce),
        lightly_utils._mask_reduce(source[1], mask[1], 4, reduce),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        utils._mask_reduce(source, mask, 4, reduce)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        utils._mask_reduce_batched(source[0], mask[0], 4, reduce)


# ------------------------------------------------------------------------------------------
# Leaf modules and stochastic depth
# ------------------------------------------------------------------------------------------


def _tiny_torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(16, 8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16)


def test_get_named_leaf_modules_and_norm_layers() -> None:
    model = _tiny_torchvision_vit()
    ours = utils.get_named_leaf_modules(model)
    ref = lightly_utils.get_named_leaf_modules(model)
    assert list(ours) == list(ref)
    assert all(ours[name] is ref[name] for name in ref)
    assert "encoder.layers.encoder_layer_0.mlp.0" in ours and "encoder" not in ours
    assert utils.get_named_leaf_modules(nn.ReLU()).keys() == {""}
    assert utils._NORM_LAYERS == lightly_utils._NORM_LAYERS


@pytest.mark.parametrize(("prob", "mode"), [(0.0, "row"), (0.5, "row"), (1.0, "batch")])
def test_add_stochastic_depth_to_blocks(prob: float, mode: str) -> None:
    torch.manual_seed(0)
    ours, ref = _tiny_torchvision_vit(), _tiny_torchvision_vit()
    ref.load_state_dict(ours.state_dict())
    keys_before = list(ours.state_dict())
    utils.add_stochastic_depth_to_blocks(ours, prob, mode)
    lightly_utils.add_stochastic_depth_to_blocks(ref, prob, mode)
    assert [(n, repr(m)) for n, m in ours.named_modules()] == [
        (n, repr(m)) for n, m in ref.named_modules()
    ]
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert (list(ours.state_dict()) == keys_before) == (prob == 0)
    x = torch.randn(6, 3, 16, 16)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        torch.manual_seed(1)
        out = ours(x)
        torch.manual_seed(1)
        torch.testing.assert_close(out, ref(x))
    if prob == 1.0:  # every residual branch dropped: the blocks are the identity
        ours.train()
        encoder = ours.encoder
        tokens = torch.randn(2, 5, 8)
        torch.testing.assert_close(encoder.layers(tokens), tokens)


def _tiny_timm_vit(depth: int = 4) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=16, patch_size=8, embed_dim=8, depth=depth, num_heads=2, num_classes=0
    )


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("depth", [1, 4])
def test_update_drop_path_rate(rate: float, depth: int) -> None:
    from timm.layers import DropPath

    model, ref = _tiny_timm_vit(depth), _tiny_timm_vit(depth)
    utils.update_drop_path_rate(model, rate, mode="uniform")
    lightly_utils.update_drop_path_rate(ref, rate, mode="uniform")
    for block, block_ref in zip(model.blocks, ref.blocks, strict=True):
        for name in ("drop_path1", "drop_path2"):
            assert repr(getattr(block, name)) == repr(getattr(block_ref, name))
    # Linear: block i gets rate * i / (depth - 1) (LightlySSL gives every non-first block
    # the full rate, against its documentation).
    utils.update_drop_path_rate(model, rate)
    expected = [rate * i / max(depth - 1, 1) for i in range(depth)]
    for block, value in zip(model.blocks, expected, strict=True):
        for layer in (block.drop_path1, block.drop_path2):
            if value == 0:
                assert isinstance(layer, nn.Identity)
            else:
                assert isinstance(layer, DropPath)
                assert layer.drop_prob == pytest.approx(value)
    with pytest.raises(ValueError, match="unknown 'mode' 'cosine'"):
        utils.update_drop_path_rate(model, rate, mode="cosine")
