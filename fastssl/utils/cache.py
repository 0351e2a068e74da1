"""fastssl's folder for what it computes once per machine and keeps (compiled kernels, shard
counts): never inside the installed package, which may be read-only.

Example:
    >>> user_cache_dir().endswith("fastssl")
    True
"""

from __future__ import annotations

import os


def user_cache_dir() -> str:
    """``$XDG_CACHE_HOME/fastssl``, by default ``~/.cache/fastssl`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastssl")
