from __future__ import annotations

import pytest
import torch
from lightly.data.multi_view_collate import MultiViewCollate as LightlyMultiViewCollate

from fastssl.data.multi_view_collate import MultiViewCollate


def _batch(sizes: tuple[int, ...], n: int = 3) -> list[tuple[list[torch.Tensor], int, str]]:
    generator = torch.Generator().manual_seed(0)
    return [
        ([torch.rand(3, s, s, generator=generator) for s in sizes], index % 2, f"img{index}.png")
        for index in range(n)
    ]


@pytest.mark.parametrize("sizes", [(8, 8), (8, 8, 4, 4, 4), (6,)])
def test_equals_lightly(sizes: tuple[int, ...]) -> None:
    batch = _batch(sizes)
    views, targets, names = MultiViewCollate()(batch)
    ref_views, ref_targets, ref_names = LightlyMultiViewCollate()(batch)
    assert len(views) == len(ref_views) == len(sizes)
    for ours, theirs, size in zip(views, ref_views, sizes, strict=True):
        assert ours.shape == (3, 3, size, size)
        assert torch.equal(ours, theirs)
    assert torch.equal(targets, ref_targets) and targets.dtype == torch.long
    assert names == ref_names == ["img0.png", "img1.png", "img2.png"]
    # Naive definition: view i of the batch is view i of every sample, in order.
    for i in range(len(sizes)):
        for b, sample in enumerate(batch):
            assert torch.equal(views[i][b], sample[0][i])


def test_empty_batch_warns_like_lightly() -> None:
    with pytest.warns(UserWarning, match="MultiViewCollate received empty batch"):
        views, targets, names = MultiViewCollate()([])
    assert views == [] and names == [] and targets.dtype == torch.long and targets.numel() == 0


def test_different_view_counts_name_the_sample() -> None:
    batch = _batch((4, 4)) + _batch((4,), n=1)
    with pytest.raises(ValueError, match=r"sample 3 \('img0.png'\) has 1 views but sample 0 has 2"):
        MultiViewCollate()(batch)
