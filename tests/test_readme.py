"""The README's tutorials run as written (the image folder path aside), and the Markdown
tables of the READMEs are well formed.

Each ```python block under the headings below is taken from README.md itself, so the
README cannot drift from the code: a renamed argument or class fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The Markdown files whose tables are checked.
MARKDOWN = ["README.md", "benchmarks/README.md"]


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


def table_errors(text: str) -> list[str]:
    """Problems of the Markdown tables in ``text``: a table is a run of lines that start
    with ``|``, its second line the ``|---|`` separator; every row has the header's number of
    cells, and the line after a table is blank (a line glued to a table is a broken row)."""
    errors: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not (lines[index].startswith("|") and index + 1 < len(lines)):
            index += 1
            continue
        header = lines[index]
        if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1]):
            errors.append(f"line {index + 1}: table without a separator line")
            index += 1
            continue
        cells = header.count("|")
        end = index + 2
        while end < len(lines) and lines[end].startswith("|"):
            if lines[end].count("|") != cells:
                errors.append(
                    f"line {end + 1}: {lines[end].count('|') - 1} cells, header {cells - 1}"
                )
            end += 1
        if end < len(lines) and lines[end].strip():
            errors.append(f"line {end + 1}: text glued to the table above: {lines[end][:40]!r}")
        index = end
    return errors


@pytest.mark.parametrize("name", MARKDOWN)
def test_markdown_tables_are_well_formed(name: str) -> None:
    assert table_errors((ROOT / name).read_text()) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("| a | b |\n|---|---|\n| 1 | 2 |\nL| 3 | 4 |\n", "line 4: text glued"),
        ("| a | b |\n|---|---|\n| 1 |\n", "line 3: 1 cells, header 2"),
        ("| a | b |\n| 1 | 2 |\n", "line 1: table without a separator"),
    ],
)
def test_broken_tables_are_reported(text: str, error: str) -> None:
    errors = table_errors(text)
    assert errors and errors[0].startswith(error), errors
