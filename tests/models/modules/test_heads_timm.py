from __future__ import annotations

import pytest
from lightly.models.modules import heads_timm as lightly_heads_timm

from fastssl.models import modules
from fastssl.models.modules import heads_timm
from fastssl.models.modules.heads import masked
from tests.models.modules.heads._oracle import assert_matches_lightly, build_same_seed


def test_one_implementation() -> None:
    assert heads_timm.AIMPredictionHead is masked.AIMPredictionHead
    assert heads_timm.AIMPredictionHeadBlock is masked.AIMPredictionHeadBlock
    assert modules.AIMPredictionHead is heads_timm.AIMPredictionHead
    assert set(heads_timm.__all__) == {"AIMPredictionHead", "AIMPredictionHeadBlock"}


@pytest.mark.parametrize("mlp_ratio", [4.0, 1.5])
def test_block_matches_lightly(mlp_ratio: float) -> None:
    kwargs = {"input_dim": 8, "output_dim": 8, "mlp_ratio": mlp_ratio}
    ours, theirs = build_same_seed(
        heads_timm.AIMPredictionHeadBlock, lightly_heads_timm.AIMPredictionHeadBlock, kwargs
    )
    assert_matches_lightly(ours, theirs, (2, 3, 8))


@pytest.mark.parametrize("num_blocks", [0, 2])
def test_head_matches_lightly(num_blocks: int) -> None:
    kwargs = {"input_dim": 6, "output_dim": 5, "hidden_dim": 8, "num_blocks": num_blocks}
    ours, theirs = build_same_seed(
        heads_timm.AIMPredictionHead, lightly_heads_timm.AIMPredictionHead, kwargs
    )
    assert_matches_lightly(ours, theirs, (2, 4, 6))
