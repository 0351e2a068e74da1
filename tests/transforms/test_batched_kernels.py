"""The numba kernels cache in the user's cache folder, never in the installed package."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fastssl.transforms import batched_kernels

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not batched_kernels.available(), reason="needs numba")


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("setting", ["xdg", "numba_cache_dir"])
def test_kernels_cache_in_the_user_cache_dir_of_a_read_only_install(
    setting: str, tmp_path: Path
) -> None:
    # A copy of the package, read-only, as a system-wide install would be.
    install = tmp_path / "site"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "fastssl", install / "fastssl", ignore=skip)
    _read_only(install)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(install)
    if setting == "xdg":
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
        expected = tmp_path / "xdg" / "fastssl" / "numba"
    else:
        expected = tmp_path / "numba"
        env["NUMBA_CACHE_DIR"] = str(expected)
    code = (
        "import fastssl, fastssl.transforms.batched_kernels as k; "
        "print(fastssl.__file__, k.cache_dir()); k.warm_up()"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        package, folder = result.stdout.split()
        assert Path(package).is_relative_to(install) and Path(folder) == expected
        cached = [p.name for p in expected.rglob("*") if p.suffix in (".nbi", ".nbc")]
        assert any(name.startswith("batched_kernels.") for name in cached), cached
        beside_source = [p for p in install.rglob("*") if p.suffix in (".nbi", ".nbc")]
        assert beside_source == []
    finally:
        _writable(install)


def test_an_explicit_numba_cache_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert batched_kernels.cache_dir() == str(tmp_path / "xdg" / "fastssl" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert batched_kernels.cache_dir() == str(tmp_path / "mine")
