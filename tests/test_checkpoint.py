"""The one checkpoint reader: weights only, refused with a reason, used by every entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from fastssl import checkpoint as core
from fastssl.cli import main
from fastssl.eval import checkpoint as eval_checkpoint
from fastssl.train import checkpoint as train_checkpoint
from tests.eval.conftest import TinyMethod, make_folder, save_checkpoint, tiny_registered
from tests.train._tiny import TINY
from tests.train._tiny import make_folder as make_images


class Payload:
    """Unpickling this runs ``os.system``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint in fastssl's format whose hyper-parameters carry a payload."""
    model = TinyMethod()
    torch.save(
        {
            "global_step": 1,
            "hyper_parameters": {"method": "tiny", "method_kwargs": {}, "x": Payload(marker)},
            "state_dict": {f"method.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    recipe = {
        "method": TINY,
        "data": {"input_size": 8, "num_workers": 0, "batch_size": 8},
        "trainer": {"accelerator": "cpu", "max_steps": 1},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _api(call: Callable[[Path], Any]) -> Callable[[Path, Path], int]:
    def run(ckpt: Path, tmp_path: Path) -> int:
        with pytest.raises(core.CheckpointError, match="refused: it is not weights-only"):
            call(ckpt)
        return 2

    return run


def _eval_knn(ckpt: Path, tmp_path: Path) -> int:
    train = make_folder(tmp_path / "train", per_class=2)
    argv = ["--train", str(train), "--val", str(train), "--workers", "0", "--quiet"]
    return main(["eval", "knn", "--checkpoint", str(ckpt), *argv])


def _export(ckpt: Path, tmp_path: Path) -> int:
    return main(["export", str(ckpt), "--out", str(tmp_path / "backbone.pt")])


def _pretrain_resume(ckpt: Path, tmp_path: Path) -> int:
    images = make_images(tmp_path / "images", n=8)
    argv = ["--data", str(images), "--out", str(tmp_path / "run"), "--resume", str(ckpt)]
    return main(["pretrain", str(_recipe(tmp_path)), *argv])


def _pretrain_auto(ckpt: Path, tmp_path: Path) -> int:
    # The payload sits in OUT/last.ckpt, which --resume auto (the default) continues.
    run = tmp_path / "run"
    run.mkdir()
    ckpt.rename(run / "last.ckpt")
    images = make_images(tmp_path / "images", n=8)
    return main(["pretrain", str(_recipe(tmp_path)), "--data", str(images), "--out", str(run)])


__all__ = ["tiny_registered"]  # the fixture, used below

ENTRY_POINTS: dict[str, Callable[[Path, Path], int]] = {
    "fastssl.checkpoint.read_checkpoint": _api(core.read_checkpoint),
    "fastssl.train.checkpoint.load_method": _api(train_checkpoint.load_method),
    "fastssl.eval.checkpoint.load_backbone": _api(eval_checkpoint.load_backbone),
    "fastssl.eval.checkpoint.read_checkpoint": _api(eval_checkpoint.read_checkpoint),
    "fastssl eval knn --checkpoint": _eval_knn,
    "fastssl export": _export,
    "fastssl pretrain --resume CKPT": _pretrain_resume,
    "fastssl pretrain --resume auto": _pretrain_auto,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_reduce_payload_is_refused_and_never_runs(
    entry: str, tmp_path: Path, tiny_registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "payload-ran"
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    code = ENTRY_POINTS[entry](ckpt, tmp_path)
    assert code == 2
    assert not marker.exists(), "the pickled payload ran"
    err = capsys.readouterr().err
    if entry.startswith("fastssl "):  # one line that says why, no traceback
        assert "refused: it is not weights-only" in err and "posix.system" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "backbone.pt").exists()


def test_own_checkpoint_loads_weights_only(tmp_path: Path, tiny_registered: None) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt")
    data = core.read_checkpoint(path)
    assert torch.load(path, weights_only=True).keys() == data.keys()
    loaded = train_checkpoint.load_method(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    "read",
    [
        lambda p: core.method_state_dict(core.read_checkpoint(p)),
        lambda p: train_checkpoint.method_state_dict(train_checkpoint.read_checkpoint(p)),
        lambda p: eval_checkpoint.read_checkpoint(p).state_dict,
    ],
    ids=["core", "train", "eval"],
)
def test_every_reader_strips_the_compile_prefix(
    read: Callable[[Path], dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    path, model = save_checkpoint(tmp_path / "a.ckpt")
    data = torch.load(path, weights_only=True)
    data["state_dict"] = {
        k.replace("method.backbone.", "method.backbone._orig_mod."): v
        for k, v in data["state_dict"].items()
    }
    torch.save(data, path)
    assert set(read(path)) == set(model.state_dict())


def test_readers_share_one_implementation() -> None:
    assert train_checkpoint.read_checkpoint is core.read_checkpoint
    assert eval_checkpoint.CheckpointError is core.CheckpointError


def test_missing_file_is_both_checkpoint_and_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(core.CheckpointNotFoundError, match=r"nope\.ckpt.*does not exist") as info:
        core.load_file(tmp_path / "nope.ckpt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
