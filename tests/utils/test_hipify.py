from __future__ import annotations

import warnings

import pytest
from lightly.utils import hipify as lightly_hipify

from fastssl.utils import hipify


def test_bcolors_match_lightly() -> None:
    names = [n for n in vars(lightly_hipify.bcolors) if n.isupper()]
    assert names
    for name in names:
        assert getattr(hipify.bcolors, name) == getattr(lightly_hipify.bcolors, name)


@pytest.mark.parametrize("category", [UserWarning, RuntimeWarning])
def test_print_as_warning_shows_only_the_coloured_message(category: type[Warning]) -> None:
    original = warnings.formatwarning
    shown: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
        # What Python's default showwarning would print, with the format active now.
        shown.append(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        hipify.print_as_warning("hello world", category)
    assert warnings.formatwarning is original
    assert shown == [f"{hipify.bcolors.WARNING}hello world{hipify.bcolors.ENDC}\n"]


def test_print_as_warning_category_and_restores_format_on_error() -> None:
    original = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="boom"):
            hipify.print_as_warning("boom", RuntimeWarning)
    assert warnings.formatwarning is original
