"""The bottom layers do not import the top ones.

``fastssl.utils`` and ``fastssl.models`` are the building blocks that methods, training,
evaluation, profiling and the CLI are made of; an import the other way round makes a cycle
waiting to happen and drags the whole package into ``import fastssl.models``. Every import
statement counts, including the ones inside functions and ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastssl"
BOTTOM = ("utils", "models")
TOP = ("fastssl.eval", "fastssl.train", "fastssl.methods", "fastssl.profile", "fastssl.cli")

MODULES = sorted(path for layer in BOTTOM for path in (PACKAGE / layer).rglob("*.py"))


def _module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, relative ones resolved.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule).
    """
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _is_top(name: str) -> bool:
    return any(name == top or name.startswith(f"{top}.") for top in TOP)


def test_the_bottom_layers_have_modules() -> None:
    names = {_module_name(path) for path in MODULES}
    assert {"fastssl.utils.dist", "fastssl.models.utils"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(p) for p in MODULES])
def test_does_not_import_the_top_layers(path: Path) -> None:
    upward = sorted(
        {f"line {line}: {name}" for line, name in imported_modules(path) if _is_top(name)}
    )
    assert not upward, (
        f"{_module_name(path)} imports {', '.join(upward)}: fastssl.utils and fastssl.models "
        f"must not import {', '.join(TOP)}; move the shared piece down into them instead."
    )


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "fastssl" / "utils" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..eval.knn import knn_accuracy\n")
    names = [name for _, name in imported_modules(module, root=tmp_path)]
    assert any(_is_top(name) for name in names), names
