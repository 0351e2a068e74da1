"""Checkpoints of ``fastssl pretrain``: reading them back, and what a run does with ``OUT``.

Reading is :mod:`fastssl.checkpoint`'s (the one weights-only reader, shared with ``fastssl
eval`` and ``fastssl export``); this module re-exports it for the training side and adds
:func:`prepare_run`, the rule for an output folder that already holds a run:

- ``resume="auto"`` (the CLI's default) continues the newest checkpoint in ``OUT``
  (``last.ckpt``, or the ``hpc_ckpt_N.ckpt`` Lightning writes when SLURM preempts a job),
  so a requeued job goes on where it stopped; an empty ``OUT`` starts a new run;
- ``resume=None`` / ``"never"`` starts a new run and refuses a folder that holds a
  checkpoint, unless ``overwrite``;
- ``resume=PATH`` continues that checkpoint; into a folder holding another run's
  checkpoint only with ``overwrite``;
- ``overwrite`` deletes ``OUT``'s checkpoints, metrics and summary first (a new run).

Example:
    >>> method = load_method("runs/simclr/last.ckpt")  # doctest: +SKIP
    >>> features = method(images)  # (B, D)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fastssl.checkpoint import (
    STATE_PREFIX,
    CheckpointError,
    CheckpointNotFoundError,
    load_file,
    method_state_dict,
    read_checkpoint,
    rebuild_method,
)
from fastssl.methods.base import Method

#: ``resume`` values that are not paths.
RESUME_AUTO = "auto"
RESUME_NEVER = "never"
#: What ``overwrite`` deletes in ``OUT`` (files and folders written by ``pretrain``).
RUN_OUTPUTS = (
    "last.ckpt",
    "last.ckpt.tmp",
    "hpc_ckpt_*.ckpt",
    "step-*.ckpt",
    "metrics.csv",
    "summary.json",
    "tensorboard",
)


class RunExistsError(ValueError):
    """``OUT`` holds a checkpoint that a new run would overwrite."""


def load_method(path: str | os.PathLike[str], strict: bool = True) -> Method:
    """Rebuilds the trained method of a checkpoint, in eval mode, on the CPU.

    Args:
        path: A ``fastssl pretrain`` checkpoint (e.g. ``OUT/last.ckpt``).
        strict: Require the state dict to match the rebuilt method exactly.

    Returns:
        The :class:`~fastssl.methods.Method` with the trained weights; its ``backbone``
        gives (B, D) features for images of shape (B, 3, H, W).

    Raises:
        CheckpointError: See :func:`fastssl.checkpoint.read_checkpoint` and
            :func:`fastssl.checkpoint.rebuild_method`.
    """
    return rebuild_method(read_checkpoint(path), os.fspath(path), strict=strict)


def find_resume_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of ``out`` (``last.ckpt`` or ``hpc_ckpt_N.ckpt``), if any."""
    folder = Path(out)
    candidates = [folder / "last.ckpt", *folder.glob("hpc_ckpt_*.ckpt")]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def clear_run(out: str | os.PathLike[str]) -> None:
    """Deletes what ``pretrain`` wrote into ``out`` (:data:`RUN_OUTPUTS`)."""
    folder = Path(out)
    for pattern in RUN_OUTPUTS:
        for path in folder.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunStart:
    """How a run starts.

    Attributes:
        resume: The checkpoint to continue (None: a new run).
        step: Its optimizer step (None: a new run); metrics logged from here on are redone.
    """

    resume: str | None
    step: int | None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def prepare_run(
    out: str | os.PathLike[str], resume: str | None, overwrite: bool = False, clear: bool = True
) -> RunStart:
    """Decides how a run into ``out`` starts (see the module docstring) and checks the
    checkpoint it continues (weights only, fastssl's format).

    Args:
        out: The output folder (may not exist yet).
        resume: ``"auto"``, ``None`` / ``"never"`` or a checkpoint path.
        overwrite: Start over in a folder that holds a run (its outputs are deleted).
        clear: Delete the old outputs when overwriting (False on ranks other than 0).

    Returns:
        The :class:`RunStart`.

    Raises:
        RunExistsError: ``out`` holds a checkpoint and the run would overwrite it.
        CheckpointNotFoundError: ``resume`` names no file.
        CheckpointError: The checkpoint to continue is refused or not fastssl's.
    """
    folder = Path(out)
    existing = find_resume_checkpoint(folder)
    explicit = resume not in (None, RESUME_AUTO, RESUME_NEVER)
    if explicit and overwrite and folder.resolve() in Path(str(resume)).resolve().parents:
        raise RunExistsError(
            f"--resume {resume!r} is inside --out {str(folder)!r}, which --overwrite would "
            "delete: drop --overwrite to continue it, or resume into another folder"
        )
    if overwrite:
        if clear:
            clear_run(folder)
        existing = None
    if resume in (None, RESUME_NEVER):
        if existing is not None:
            raise RunExistsError(
                f"{str(folder)!r} holds a checkpoint ({existing.name}) of an earlier run: "
                "continue it with --resume auto, or start over with --overwrite (deletes its "
                "checkpoints and metrics), or choose another --out"
            )
        return RunStart(None, None)
    if resume == RESUME_AUTO:
        if existing is None:
            return RunStart(None, None)
        path = existing
    else:
        path = Path(str(resume))
        if not path.is_file():
            raise CheckpointNotFoundError(f"--resume {resume!r}: no such checkpoint")
        if existing is not None and not _same_file(existing, path):
            raise RunExistsError(
                f"{str(folder)!r} holds a checkpoint ({existing.name}) of another run, which "
                f"continuing {str(path)!r} there would overwrite: pass --overwrite to replace "
                "it, or choose another --out"
            )
    checkpoint = read_checkpoint(path)
    return RunStart(str(path), int(checkpoint.get("global_step", 0)))


__all__ = [
    "RESUME_AUTO",
    "RESUME_NEVER",
    "STATE_PREFIX",
    "CheckpointError",
    "CheckpointNotFoundError",
    "RunExistsError",
    "RunStart",
    "clear_run",
    "find_resume_checkpoint",
    "load_file",
    "load_method",
    "method_state_dict",
    "prepare_run",
    "read_checkpoint",
]
