from __future__ import annotations

import warnings

import pytest
from lightly.utils.deprecation import warn_deprecated as lightly_warn_deprecated

from fastssl.utils.deprecation import warn_deprecated


def _caught(fn, *args: object) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args)
    return caught


@pytest.mark.parametrize(
    ("name", "alternative", "removed_in"), [("A", "B", "1.7"), ("f()", "g()", "2.0")]
)
def test_message_and_category_match_lightly(name: str, alternative: str, removed_in: str) -> None:
    (ours,) = _caught(warn_deprecated, name, alternative, removed_in)
    (theirs,) = _caught(lightly_warn_deprecated, name, alternative, removed_in)
    assert ours.category is theirs.category is FutureWarning
    assert str(ours.message) == str(theirs.message)
    assert f"{name} is deprecated" in str(ours.message) and alternative in str(ours.message)


def _deprecated_api() -> None:
    warn_deprecated("old", "new", "9.9")


def test_default_stacklevel_points_at_the_caller_of_the_deprecated_object() -> None:
    def caller() -> None:
        _deprecated_api()

    (caught,) = _caught(caller)
    assert caught.filename == __file__
    # stacklevel 3: warn_deprecated -> _deprecated_api -> caller (this line's function).
    assert caught.lineno == caller.__code__.co_firstlineno + 1
