"""senet's modules import one way: no import circle among them (imports inside functions count:
a circle through a lazy import is still one), and no module below the package root imports the
root itself (``import senet`` / ``from senet import ...``; the version is in ``senet.version``).

The imports are read from the source with ``ast``, so the check sees every module without
importing any.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "senet"


def _modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported dotted name, whether the statement binds the top-level package's name)`` for
    every import statement of the module, at any depth; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # ``import senet.x`` binds ``senet``: code then goes through the root
            out += [(a.name, a.asname is None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out += [(f"{base}.{a.name}", False) for a in node.names]  # a submodule, or a name in base
    return out


def import_graph(package: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The package's modules -> the package's modules each imports, and the imports of the root
    by modules below it (``import root``, ``from root import name``, ``import root.x``)."""
    modules = _modules(package)
    root = package.name

    def owner(name: str) -> str | None:  # the module a dotted name is, or is defined in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph, to_root = {}, []
    for module, path in modules.items():
        targets = set()
        for name, binds_root in _imports(module, path):
            target = owner(name)
            if target is None:
                continue
            targets.add(target)
            if module != root and (target == root or binds_root):
                to_root.append(f"{module} imports {root if target == root else name}")
        graph[module] = targets - {module}
    return graph, to_root


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_senet_imports_have_no_circle_and_no_arrow_to_the_root():
    graph, to_root = import_graph(PACKAGE)
    assert len(graph) > 50 and "senet.models._builder" in graph["senet.models"]  # the source was read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert to_root == []


@pytest.mark.parametrize("lazy", [False, True])
def test_the_check_finds_a_circle_and_an_import_of_the_root(tmp_path, lazy):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.version import __version__\n")
    (pkg / "version.py").write_text("__version__ = '1'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from pkg.sub import b\n")
    body = "from pkg.sub.a import x\n"
    (pkg / "sub" / "b.py").write_text("def f():\n    " + body if lazy else body)
    (pkg / "sub" / "c.py").write_text("from pkg import __version__\nfrom .. import version\n")
    graph, to_root = import_graph(pkg)
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]
    assert to_root == ["pkg.sub.c imports pkg"]
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from pkg.version import __version__\n")
    graph, to_root = import_graph(pkg)
    assert find_cycle(graph) is None and to_root == []
