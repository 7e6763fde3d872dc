"""The engines hold runtimes only: no import from edge/engines/ up into the layers that use them.

Read from the source (every `import`, also those inside functions, which a module-level check of
`sys.modules` would miss), so a lazy import added to dodge a cycle is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[3] / "edge"

# what sits above the engines: decoding must not need them
ABOVE_ENGINES = ("edge.training", "edge.thresholds", "edge.verdict", "edge.reference", "edge.quantization")
# graph edits are pure ONNX: they need neither the runtimes nor anything above them
ABOVE_ONNX_EDIT = (*ABOVE_ENGINES, "edge.engines")


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file under `root`, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            out += [(node.lineno, f"{base}.{alias.name}" if node.module is None else base) for alias in node.names]
    return sorted(out)


def upward_imports(folder: Path, forbidden: tuple[str, ...], root: Path = EDGE.parent) -> list[str]:
    """'file:line imports module' for each import in `folder` of a module in (or under) `forbidden`."""
    bad = []
    for path in sorted(folder.glob("*.py")):
        for line, module in imported_modules(path, root):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize(("package", "forbidden"), [("engines", ABOVE_ENGINES), ("onnx_edit", ABOVE_ONNX_EDIT)])
def test_no_upward_imports(package: str, forbidden: tuple[str, ...]) -> None:
    folder = EDGE / package
    assert len(list(folder.glob("*.py"))) > 2, f"{folder} not found: the check would pass on nothing"
    assert upward_imports(folder, forbidden) == []


def test_the_check_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The scanner itself: an import inside a function and a relative one are both reported."""
    fake_edge = tmp_path / "edge"
    (fake_edge / "engines").mkdir(parents=True)
    (fake_edge / "engines" / "x.py").write_text(
        "def f():\n    from edge.training.evaluate import evaluate\n\n"
        "from ..verdict import Verdict\nimport edge.errors\n"
    )
    bad = upward_imports(fake_edge / "engines", ABOVE_ENGINES, root=tmp_path)
    assert bad == ["edge/engines/x.py:2 imports edge.training.evaluate", "edge/engines/x.py:4 imports edge.verdict"]
