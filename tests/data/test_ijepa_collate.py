from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from lightly.data import IJEPAMaskCollator as LightlyIJEPAMaskCollator
from torch.utils.data import DataLoader

from fastssl.data import IJEPAMaskCollator


def _batch(size: int) -> list[tuple[torch.Tensor, int]]:
    return [(torch.full((3, 4, 4), float(i)), i) for i in range(size)]


def test_signature_matches_lightly() -> None:
    def parameters(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(IJEPAMaskCollator) == parameters(LightlyIJEPAMaskCollator)


CONFIGS: list[dict[str, Any]] = [
    {},
    dict(input_size=64, patch_size=8),
    dict(input_size=(96, 64), patch_size=8, min_keep=10),
    dict(allow_overlap=True, nenc=2, npred=3),
    dict(input_size=32, patch_size=4, enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2)),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_masks_equal_lightlys_for_the_same_seed(kwargs: dict[str, Any], batch_size: int) -> None:
    """Same RNG draws as lightly: the batch counter seeds the block sizes, torch's global
    RNG the positions. Several consecutive batches are compared."""
    ours, theirs = IJEPAMaskCollator(**kwargs), LightlyIJEPAMaskCollator(**kwargs)
    batch = _batch(batch_size)
    for step in range(3):
        torch.manual_seed(100 + step)
        images, enc, pred = ours(batch)
        torch.manual_seed(100 + step)
        their_images, their_enc, their_pred = theirs(batch)
        assert isinstance(enc, list) and isinstance(pred, list)
        assert len(enc) == len(their_enc) == kwargs.get("nenc", 1)
        assert len(pred) == len(their_pred) == kwargs.get("npred", 2)
        for mine, other in zip(enc + pred, their_enc + their_pred, strict=True):
            assert mine.dtype == other.dtype == torch.int64
            assert mine.shape == other.shape and mine.shape[0] == batch_size
            assert torch.equal(mine, other)
        assert torch.equal(images[0], their_images[0]) and torch.equal(images[1], their_images[1])


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_mask_contents(kwargs: dict[str, Any]) -> None:
    collator = IJEPAMaskCollator(**kwargs)
    height, width = collator.height, collator.width
    torch.manual_seed(0)
    for _ in range(5):
        _, enc, pred = collator(_batch(6))
        for mask in enc + pred:
            assert mask.shape[1] > collator.min_keep
            assert mask.min() >= 0 and mask.max() < height * width
            # Ascending indices of distinct patches.
            assert bool((mask[:, 1:] > mask[:, :-1]).all())
        for b in range(6):
            for mask in pred:
                rows, cols = mask[b] // width, mask[b] % width
                # Blocks never touch the last patch row or column (as in the authors' code).
                assert rows.max() <= height - 2 and cols.max() <= width - 2


@pytest.mark.parametrize("allow_overlap", [False, True])
def test_context_avoids_the_targets(allow_overlap: bool) -> None:
    """With room to spare (small target blocks), the context block never overlaps the
    image's target blocks unless allow_overlap; with it, overlaps happen."""
    collator = IJEPAMaskCollator(
        input_size=96, patch_size=8, pred_mask_scale=(0.05, 0.1), enc_mask_scale=(0.3, 0.4),
        npred=2, allow_overlap=allow_overlap,
    )  # fmt: skip
    torch.manual_seed(0)
    overlaps = 0
    for _ in range(10):
        _, (enc,), pred = collator(_batch(4))
        for b in range(4):
            targets = set(torch.cat([mask[b] for mask in pred]).tolist())
            overlaps += bool(targets & set(enc[b].tolist()))
    assert (overlaps > 0) is allow_overlap


def test_block_sizes_follow_the_scales() -> None:
    """Seeded statistics: the kept target patches per image lie in the pred scale range,
    and the context block is a square whose area follows the enc scale range."""
    collator = IJEPAMaskCollator(
        input_size=160, patch_size=8, pred_mask_scale=(0.1, 0.2), enc_mask_scale=(0.5, 0.6),
        allow_overlap=True,
    )  # fmt: skip
    grid = collator.height * collator.width
    torch.manual_seed(0)
    pred_fractions, enc_fractions = [], []
    for _ in range(40):
        _, enc, pred = collator(_batch(1))  # batch of one: nothing is cut
        pred_fractions.append(pred[0].shape[1] / grid)
        enc_fractions.append(enc[0].shape[1] / grid)
    # Rounding of the block sides and the clamp to grid - 1 move the area a little.
    assert min(pred_fractions) >= 0.08 and max(pred_fractions) <= 0.23
    assert min(enc_fractions) >= 0.45 and max(enc_fractions) <= 0.62
    assert len(set(pred_fractions)) > 5  # a new size for every batch
    assert collator.step() == 40  # one step per batch


def test_sizes_are_seeded_by_the_batch_counter() -> None:
    a, b = (
        IJEPAMaskCollator(input_size=64, patch_size=8),
        IJEPAMaskCollator(input_size=64, patch_size=8),
    )
    sizes = []
    for collator, seed in ((a, 0), (b, 1)):  # other position seeds, same counter
        torch.manual_seed(seed)
        _, enc, pred = collator(_batch(1))
        sizes.append((enc[0].shape, pred[0].shape))
    assert sizes[0] == sizes[1]


def test_works_in_a_dataloader() -> None:
    collator = IJEPAMaskCollator(input_size=64, patch_size=8)
    data = [(torch.zeros(3, 64, 64), i) for i in range(6)]
    batches = list(DataLoader(data, batch_size=3, collate_fn=collator))
    assert len(batches) == 2
    (images, labels), enc, pred = batches[0]
    assert images.shape == (3, 3, 64, 64) and labels.tolist() == [0, 1, 2]
    assert enc[0].shape[0] == pred[0].shape[0] == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        # A 4 x 4 grid: the context block is 2 x 2.
        dict(input_size=32, patch_size=8, enc_mask_scale=(0.2, 0.25)),
        dict(input_size=64, patch_size=8, pred_mask_scale=(0.05, 0.05)),
    ],
)
def test_too_small_blocks_raise_instead_of_looping_forever(kwargs: dict[str, Any]) -> None:
    """lightly 1.6 redraws positions forever when a block cannot exceed min_keep."""
    with pytest.raises(ValueError, match="need more than min_keep=4"):
        IJEPAMaskCollator(**kwargs)(_batch(2))


def test_too_small_grid_raises() -> None:
    with pytest.raises(ValueError, match="patch grid"):
        IJEPAMaskCollator(input_size=16, patch_size=16)
