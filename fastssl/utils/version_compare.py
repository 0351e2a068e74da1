"""Comparison of ``x.y.z`` version strings (LightlySSL's ``lightly.utils.version_compare``).

Example:
    >>> version_compare("1.2.0", "1.1.2"), version_compare("1.2.0", "1.10.0")
    (1, -1)
"""

from __future__ import annotations


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def version_compare(v0: str, v1: str) -> int:
    """Compares two versions of the form ``major.minor.patch`` numerically.

    Args:
        v0: First version, e.g. ``"1.2.0"``.
        v1: Second version.

    Returns:
        1 if ``v0`` is newer than ``v1``, -1 if older, 0 if equal.

    Raises:
        ValueError: If a version does not have exactly three integer parts.
    """
    p0, p1 = _parse(v0), _parse(v1)
    if len(p0) != 3 or len(p1) != 3:
        raise ValueError(
            f"Length of version strings is not 3 (expected pattern `x.y.z`) but is "
            f"{v0!r} and {v1!r}."
        )
    return (p0 > p1) - (p0 < p1)
