"""Imports point down the layers written in docs/DESIGN.md, and no module imports itself back (no cycle),
counting imports at module level and inside functions."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clipwise"
DESIGN = ROOT / "docs" / "DESIGN.md"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts) or "clipwise"] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The clipwise modules ``name`` imports (module-level and function-level)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package[: len(package) - node.level + 1] if name != "clipwise" else []
                base = ".".join(["clipwise", *stem, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
            # `from pkg import submodule` imports the submodule; `from mod import name` only mod
            targets = [t for t in targets[:-1] if _short(t) in modules] or [base]
        for target in targets:
            if target == "clipwise" or target.startswith("clipwise."):
                short = _short(target)
                while short not in modules and "." in short:
                    short = short.rsplit(".", 1)[0]
                if short in modules and short != name:
                    found.add(short)
    return found


def _short(target: str) -> str:
    return "clipwise" if target == "clipwise" else target.removeprefix("clipwise.")


def _layers() -> list[list[str]]:
    text = DESIGN.read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, f"{DESIGN} has no ```layers block"
    rows = []
    for line in block.group(1).splitlines():
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        rows.append([n.strip() for n in names.split(",") if n.strip()])
    return rows


def _layer_of(module: str, rows: list[list[str]]) -> int | None:
    """Row index counted from the bottom (0 = the lowest), of the first row from the top that names it."""
    for i, row in enumerate(rows):
        if any(module == p or (p.endswith(".*") and fnmatch.fnmatch(module, p)) for p in row):
            return len(rows) - 1 - i
    return None


def test_every_module_has_a_layer_and_no_import_points_up():
    modules = _modules()
    rows = _layers()
    unplaced = sorted(m for m in modules if _layer_of(m, rows) is None)
    assert not unplaced, f"add these modules to the layers block of {DESIGN}: {unplaced}"
    upward = []
    for name, path in modules.items():
        for dep in _imports(name, path, modules):
            if _layer_of(dep, rows) > _layer_of(name, rows):
                upward.append(f"{name} imports {dep}")
    assert not upward, "imports that point up the layers of docs/DESIGN.md:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function counts."""
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    modules["a"].write_text("def f():\n    from clipwise.b import x\n    return x\n")
    assert _imports("a", modules["a"], modules) == {"b"}
    modules["b"].write_text("import clipwise.a\n")
    assert _imports("b", modules["b"], modules) == {"a"}
