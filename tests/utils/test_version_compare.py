from __future__ import annotations

import pytest
from lightly.utils.version_compare import version_compare as lightly_version_compare

from fastssl.utils.version_compare import version_compare


@pytest.mark.parametrize(
    ("v0", "v1", "expected"),
    [
        ("1.2.0", "1.1.2", 1),
        ("1.1.2", "1.2.0", -1),
        ("1.2.3", "1.2.3", 0),
        ("1.10.0", "1.9.9", 1),
        ("0.0.1", "0.0.10", -1),
        ("2.0.0", "1.99.99", 1),
    ],
)
def test_matches_lightly(v0: str, v1: str, expected: int) -> None:
    assert version_compare(v0, v1) == expected == lightly_version_compare(v0, v1)


@pytest.mark.parametrize(("v0", "v1"), [("1.2", "1.2.0"), ("1.2.0", "1.2.0.1")])
def test_wrong_length_raises(v0: str, v1: str) -> None:
    with pytest.raises(ValueError, match=r"x\.y\.z"):
        version_compare(v0, v1)
