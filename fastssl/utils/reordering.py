"""Reordering of items by their keys (LightlySSL's ``lightly.utils.reordering``).

Example:
    >>> sort_items_by_keys([3, 2, 1], ["!", "world", "hello"], [1, 2, 3])
    ['hello', 'world', '!']
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def sort_items_by_keys(
    keys: Sequence[_K], items: Sequence[_V], sorted_keys: Sequence[_K]
) -> list[_V]:
    """Returns ``items`` in the order that ``sorted_keys`` gives their keys.

    Args:
        keys: The key of every item (``keys[i]`` identifies ``items[i]``).
        items: The items to reorder.
        sorted_keys: The keys in the wanted order.

    Returns:
        ``[item of sorted_keys[0], item of sorted_keys[1], ...]``. With repeated keys, the
        last item of a key is used for every occurrence of that key.

    Raises:
        ValueError: If the three sequences differ in length.
        KeyError: If ``sorted_keys`` holds a key that ``keys`` lacks.
    """
    if not len(keys) == len(items) == len(sorted_keys):
        raise ValueError(
            f"All inputs (keys,  items and sorted_keys) must have the same length, but their "
            f"lengths are: ({len(keys)},{len(items)} and {len(sorted_keys)})."
        )
    item_of = dict(zip(keys, items, strict=True))
    return [item_of[key] for key in sorted_keys]
