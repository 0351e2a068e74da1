"""Deprecation warnings (LightlySSL's ``lightly.utils.deprecation``).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_deprecated("old_fn", "new_fn", "2.0")
    >>> str(caught[0].message)
    'old_fn is deprecated and will be removed in lightly 2.0. Use new_fn instead.'
"""

from __future__ import annotations

import warnings


def warn_deprecated(name: str, alternative: str, removed_in: str, stacklevel: int = 3) -> None:
    """Warns that ``name`` is deprecated in favour of ``alternative``.

    A ``FutureWarning``, not a ``DeprecationWarning``: Python's default filters show the
    former to users and hide the latter unless it is raised in ``__main__``.

    Args:
        name: The deprecated object.
        alternative: What to use instead.
        removed_in: The version that removes ``name`` (the message says "lightly
            <version>", as LightlySSL's does, so that messages stay comparable).
        stacklevel: Passed to :func:`warnings.warn`; 3 points at the code that called
            the deprecated object when this is called from its ``__init__`` or from a
            module ``__getattr__``.
    """
    warnings.warn(
        f"{name} is deprecated and will be removed in lightly {removed_in}. "
        f"Use {alternative} instead.",
        FutureWarning,
        stacklevel=stacklevel,
    )
