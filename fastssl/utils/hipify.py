"""Coloured warnings for the terminal (LightlySSL's ``lightly.utils.hipify``).

Example:
    >>> bcolors.WARNING + "careful" + bcolors.ENDC == "\033[93mcareful\033[0m"
    True
"""

from __future__ import annotations

import warnings


class bcolors:
    """ANSI escape sequences for coloured terminal output."""

    HEADER = "\033[95m"
    OKBLUE = "\033[94m"
    OKGREEN = "\033[92m"
    WARNING = "\033[93m"
    FAIL = "\033[91m"
    ENDC = "\033[0m"
    BOLD = "\033[1m"
    UNDERLINE = "\033[4m"


def print_as_warning(message: str, warning_class: type[Warning] = UserWarning) -> None:
    """Emits ``message`` as a warning shown as the bare message in the warning colour.

    Python's usual ``file:line: Category: message`` prefix is left out: the format is
    swapped for this one warning and restored afterwards, even if a filter turns the
    warning into an error.

    Args:
        message: The text to show.
        warning_class: The warning category (filters see this category).
    """
    original = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        warnings.warn(message, warning_class, stacklevel=2)
    finally:
        warnings.formatwarning = original


def _format_warning(
    message: str | Warning,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    # The colour is reset after the message (lightly 1.6 repeats the warning colour
    # instead, leaving the terminal yellow).
    return f"{bcolors.WARNING}{message}{bcolors.ENDC}\n"
