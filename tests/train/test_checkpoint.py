"""What a run does with an output folder that holds a checkpoint (prepare_run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastssl.train.checkpoint import (
    CheckpointNotFoundError,
    RunExistsError,
    find_resume_checkpoint,
    prepare_run,
)
from tests.eval.conftest import save_checkpoint


def _run_dir(tmp_path: Path, *files: str) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for age, name in enumerate(files):  # the first file is the newest
        path, _ = save_checkpoint(out / name) if name.endswith(".ckpt") else (out / name, None)
        if not path.exists():
            path.write_text("step,train/loss\n0,1.0\n")
        os.utime(path, (1000 - age, 1000 - age))
    return out


@pytest.mark.parametrize("resume", [None, "never", "auto"])
def test_an_empty_folder_starts_a_new_run(tmp_path: Path, resume: str | None) -> None:
    start = prepare_run(tmp_path / "new", resume)
    assert (start.resume, start.step) == (None, None)


@pytest.mark.parametrize("resume", [None, "never"])
def test_a_new_run_refuses_a_folder_holding_a_checkpoint(
    tmp_path: Path, resume: str | None
) -> None:
    out = _run_dir(tmp_path, "last.ckpt")
    with pytest.raises(RunExistsError, match=r"holds a checkpoint \(last\.ckpt\).*--overwrite"):
        prepare_run(out, resume)
    assert (out / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("files", "expected"),
    [(["last.ckpt"], "last.ckpt"), (["hpc_ckpt_1.ckpt", "last.ckpt"], "hpc_ckpt_1.ckpt")],
)
def test_auto_continues_the_newest_checkpoint(
    tmp_path: Path, files: list[str], expected: str
) -> None:
    out = _run_dir(tmp_path, *files)
    start = prepare_run(out, "auto")
    assert start.resume == str(out / expected) and start.step == 10
    assert find_resume_checkpoint(out) == out / expected


@pytest.mark.parametrize("resume", ["auto", "never", None])
def test_overwrite_deletes_the_old_run(tmp_path: Path, resume: str | None) -> None:
    out = _run_dir(tmp_path, "last.ckpt", "hpc_ckpt_1.ckpt", "metrics.csv", "summary.json")
    (out / "data.txt").write_text("not ours")
    start = prepare_run(out, resume, overwrite=True)
    assert start.resume is None
    assert sorted(p.name for p in out.iterdir()) == ["data.txt"]


def test_resume_path_into_another_runs_folder_is_refused(tmp_path: Path) -> None:
    out = _run_dir(tmp_path, "last.ckpt")
    other, _ = save_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(RunExistsError, match="of another run"):
        prepare_run(out, str(other))
    assert prepare_run(out, str(out / "last.ckpt")).resume == str(out / "last.ckpt")
    assert prepare_run(out, str(other), overwrite=True).resume == str(other)
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint"):
        prepare_run(tmp_path / "new", str(tmp_path / "missing.ckpt"))
