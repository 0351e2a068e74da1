from __future__ import annotations

import random

import pytest
from lightly.utils.reordering import sort_items_by_keys as lightly_sort

from fastssl.utils.reordering import sort_items_by_keys


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [0, 1, 7])
def test_matches_lightly(seed: int, n: int) -> None:
    rng = random.Random(seed)
    keys = rng.sample(range(100), n)
    items = [f"item{k}" for k in keys]
    sorted_keys = sorted(keys, key=lambda _: rng.random())
    result = sort_items_by_keys(keys, items, sorted_keys)
    assert result == lightly_sort(keys, items, sorted_keys)
    assert result == [f"item{k}" for k in sorted_keys]


def test_docstring_example() -> None:
    assert sort_items_by_keys([3, 2, 1], ["!", "world", "hello"], [1, 2, 3]) == [
        "hello",
        "world",
        "!",
    ]


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        sort_items_by_keys([1, 2], ["a"], [1, 2])
