"""The README's tutorials run as written (the image folder path aside).

Each ```python block under the headings below is taken from README.md itself, so the
README cannot drift from the code: a renamed argument or class fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section ``## heading``."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {heading}'"
    blocks = re.findall(r"```python\n(.*?)```", match.group(1), re.S)
    assert blocks, f"README.md section '{heading}' has no python block"
    return blocks


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for index in range(8):
            pixels = rng.integers(0, 256, size=(72, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{index}.png")
    return tmp_path


@pytest.mark.parametrize("heading", ["Custom augmentations", "A timm backbone"])
def test_tutorial_runs(heading: str, image_folder: Path) -> None:
    if heading == "A timm backbone":
        pytest.importorskip("timm")
    for block in python_blocks(heading):
        code = block.replace("./my/images/", str(image_folder))
        namespace: dict[str, object] = {}
        exec(compile(code, f"README.md: {heading}", "exec"), namespace)
        if heading == "Custom augmentations":
            view0 = namespace["view0"]
            assert getattr(view0, "shape", None) == (8, 3, 64, 64)


def test_missing_section_is_reported() -> None:
    with pytest.raises(AssertionError, match="no section '## Nope'"):
        python_blocks("Nope")
