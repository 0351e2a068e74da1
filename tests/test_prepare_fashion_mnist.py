"""tools/prepare_fashion_mnist.py: which images each subset choice writes, on a tiny IDX set."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "prepare_fashion_mnist", ROOT / "tools" / "prepare_fashion_mnist.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for prefix, n in (("train", 30), ("t10k", 20)):
        images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return src


def _indices(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*/*.png"))


@pytest.mark.parametrize(
    ("flags", "expected_train"),
    [
        (["--first"], list(range(12))),
        (["--seed", "3"], sorted(np.random.default_rng(3).permutation(30)[:12].tolist())),
    ],
)
def test_subset_choice(source: Path, tmp_path: Path, flags: list[str], expected_train: list[int]):
    out = tmp_path / "out"
    tool = _tool()
    assert (
        tool.main([str(out), "--source", str(source), "--train", "12", "--test", "5", *flags]) == 0
    )
    assert _indices(out / "train") == expected_train
    if flags == ["--first"]:
        assert _indices(out / "test") == list(range(5))
    # Each image lands in its label's class folder, pixels intact.
    for path in (out / "train").glob("*/*.png"):
        assert path.parent.name == tool.CLASSES[int(path.stem) % 10]
        assert (np.asarray(Image.open(path)) == int(path.stem)).all()


def test_count_out_of_range_is_an_error(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert _tool().main([str(tmp_path / "o"), "--source", str(source), "--train", "31"]) == 2
    assert "--train must be in 1..30, got 31" in capsys.readouterr().err


def test_missing_source_names_the_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert _tool().main([str(tmp_path / "o"), "--source", str(tmp_path / "none")]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_seed_and_first_together_is_an_error(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as exc:
        _tool().main([str(tmp_path / "o"), "--source", str(source), "--seed", "3", "--first"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
