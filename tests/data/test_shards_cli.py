"""Tests of ``fastssl shards``: options, errors, and resume after SIGKILL at several points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastssl.cli import main
from tests.data.test_shards import make_folder, snapshot

OPTIONS = [
    "--format",
    "--max-count",
    "--max-size",
    "--max-side",
    "--quality",
    "--workers",
    "--seed",
    "--quiet",
]


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in [*OPTIONS, "SRC", "DST", "webdataset", "ffcv", "DALI", "manifest.json"]:
        assert option in text, option
    import argparse

    from fastssl.data import shards_cli

    parser = argparse.ArgumentParser()
    shards_cli.add_arguments(parser)
    for action in parser._actions:
        assert action.help, f"{action.dest} has no help"


def test_cli_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_folder(tmp_path / "src", 7)
    code = main(["shards", str(src), str(tmp_path / "dst"), "--max-count", "3", "--workers", "1"])
    assert code == 0
    assert "7 samples in 3 shards" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [
        "manifest.json",
        "shard-000000.idx",
        "shard-000000.tar",
        "shard-000001.idx",
        "shard-000001.tar",
        "shard-000002.idx",
        "shard-000002.tar",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-size", "12XB"], "max_size='12XB' is not a size"),
        (["--max-count", "0"], "argument --max-count: '0' must be at least 1"),
        (["--quality", "101"], "argument --quality: '101' must be in [1, 100]"),
        (["--format", "zip"], "argument --format: invalid choice: 'zip'"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", str(tmp_path), str(tmp_path / "dst"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_src_and_dst(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["shards", str(missing), str(tmp_path / "dst")]) == 2
    assert f"SRC '{missing}' does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["shards", str(tmp_path / "empty"), str(tmp_path / "dst")]) == 2
    assert "holds no files" in capsys.readouterr().err
    src = make_folder(tmp_path / "src", 4)
    assert main(["shards", str(src), str(tmp_path / "dst"), "--quiet", "--workers", "1"]) == 0
    assert main(["shards", str(src), str(tmp_path / "dst"), "--seed", "3", "--quiet"]) == 2
    assert "different plan (seed: 0 there, 3 now)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shards", str(src)])  # DST missing
    assert "DST" in capsys.readouterr().err


def _slow_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (150, 200, 3), np.uint8)).save(folder / f"{i}.png")
    return root


def _when(predicate: Callable[[Path], bool]) -> Callable[[Path], bool]:
    return predicate


KILL_POINTS = {
    "plan written": _when(lambda d: (d / ".plan.json").exists()),
    "first shard": _when(lambda d: (d / "shard-000000.tar").exists()),
    "a shard half written": _when(lambda d: any(d.glob("shard-*.tar.tmp"))),
    "third shard": _when(lambda d: (d / "shard-000002.tar").exists()),
    "mid-verify": _when(lambda d: d.exists()),
}


def test_sigkill_at_any_point_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    src = _slow_folder(tmp_path / "src", 160)
    args = ["--max-count", "12", "--max-side", "64", "--workers", "2", "--quiet", "--seed", "4"]
    command = [sys.executable, "-m", "fastssl", "shards", str(src)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([*command, str(tmp_path / "ref"), *args], check=True, env=env)
    reference = snapshot(tmp_path / "ref")
    dst = tmp_path / "dst"
    killed_at = []
    for name, reached in KILL_POINTS.items():
        process = subprocess.Popen([*command, str(dst), *args], env=env)
        deadline = time.monotonic() + 60
        while not reached(dst) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        # SIGKILL the whole process group would also take the pool's workers; the
        # parent alone is the harsher case (orphans may still write), so kill it only.
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not (dst / "manifest.json").exists():
            killed_at.append(name)
        time.sleep(0.2)  # let orphaned pool workers notice and exit
    assert len(killed_at) >= 3, f"the conversion finished before most kill points: {killed_at}"
    subprocess.run([*command, str(dst), *args], check=True, env=env)
    assert snapshot(dst) == reference
    assert not list(dst.glob("*.tmp"))


def test_a_locked_dst_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.data.test_shards import hold_lock

    src = make_folder(tmp_path / "src", 3)
    fd = hold_lock(tmp_path / "dst")
    try:
        assert main(["shards", str(src), str(tmp_path / "dst"), "--quiet"]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.startswith("fastssl shards: error: DST ") and "being written by another" in err
    assert "pid 4242" in err and err.count("\n") == 1
