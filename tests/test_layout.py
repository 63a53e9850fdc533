"""Each module imports on its own (no import circles), and the package layout is the documented one."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cspnet"
MODULES = sorted(
    ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PKG.rglob("*.py")
    if p.name != "__main__.py"  # runs the CLI when imported
)


def _runtime_nodes(tree: ast.AST):
    """ast.walk, minus `if TYPE_CHECKING:` bodies (annotations only: no import at run time, no circle)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Every cspnet module a file imports, also inside functions (a lazy import still makes a circle)."""
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != "cspnet":
                out.add(name)
    return out


def test_no_import_circles():
    graph = {}
    for p in PKG.rglob("*.py"):
        mod = ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[mod] = {t for t in _imports(p) if t != mod and not mod.startswith(t + ".")}
    circles = []

    def walk(start, node, path):
        for t in graph.get(node, ()):
            if t == start:
                circles.append(" -> ".join([*path, start]))
            elif t not in path and len(path) < 6:
                walk(start, t, [*path, t])

    for m in graph:
        walk(m, m, [m])
    assert not circles, circles[:3]


@pytest.mark.slow
def test_each_module_imports_alone():
    # one interpreter; cspnet is dropped from sys.modules before each import, torch stays loaded (fast)
    code = (
        "import importlib, sys, torch\n"
        "for m in sys.argv[1:]:\n"
        "    for k in [k for k in sys.modules if k == 'cspnet' or k.startswith('cspnet.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        sys.exit(f'{m}: {type(e).__name__}: {e}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr.strip().splitlines()[-1:]
