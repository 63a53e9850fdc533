"""The package's import structure: layers point one way, there are no import circles, modules import alone, and the
`cspnet` command starts without the detection stack.

The layers, bottom to top (LAYERS below; CONTRIBUTING.md says the same):

    errors <- {io, hub} <- nn <- models <- {interop, deploy, data} <- engine <- bench <- ablate <- cli

A module imports only from its own layer and the layers below it: never upward, and never sideways between the
siblings interop, deploy and data. Imports inside functions count (a lazy import is still a dependency); imports
under `if TYPE_CHECKING:` do not (annotations only, nothing runs). The cli layer is cspnet/cli.py, cli_args.py,
__main__.py and every command module (`*/cli.py`, `*_cli.py`). `cspnet/__init__.py` is the public facade: it may
import from any layer, and no module inside the package imports it.

Registries that name modules by string (cli.COMMAND_MODULES, engine.task_registry.TASK_MODULES) are plugin tables
resolved when a command or a checkpoint needs them; they are not import statements and are not checked here.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "cspnet"
FACADE = "cspnet"
MODULES = sorted(
    ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PKG.rglob("*.py")
    if p.name != "__main__.py"  # runs the CLI when imported
)

LAYERS = (
    ("errors",),
    ("io", "hub"),  # hub: the weights table and download cache (urllib only)
    ("nn",),
    ("models",),
    ("interop", "deploy", "data"),  # siblings: none imports another
    ("engine",),
    ("bench",),  # measures models (and their exports)
    ("ablate",),  # trains with the engine, measures with bench's harness
    ("cli",),
)
RANK = {group: i for i, groups in enumerate(LAYERS) for group in groups}
CLI_MODULES = {"cspnet.cli", "cspnet.cli_args", "cspnet.__main__"}

# Upward edges that other work removes; each names who owns it. The test fails when one is gone (delete it here).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


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


def _resolve(name: str) -> str | None:
    """The cspnet module an import name loads (the longest module prefix), None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, mod: str | None = None) -> set[str]:
    """Every cspnet module a file (module `mod`, default: its own name) imports, also inside functions.

    `from cspnet import x` counts as an import of module cspnet.x when there is one, else of the facade `cspnet`;
    relative imports are resolved; importlib.import_module("...") with a literal name counts too.
    """
    mod = mod or _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            names = subs if len(subs) == len(node.names) else [base, *subs]
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the cspnet modules it imports (its own parent packages, which load first anyway, left out)."""
    graph = {}
    for p in PKG.rglob("*.py"):
        mod = _module_name(p)
        graph[mod] = {t for t in _imports(p) if t != mod and (t == FACADE or not mod.startswith(t + "."))}
    return graph


def layer(mod: str) -> str:
    """The layer group of a module: 'cli' for command modules, else its top-level package (cspnet.<group>)."""
    last = mod.rpartition(".")[2]
    if mod in CLI_MODULES or last == "cli" or last.endswith("_cli"):
        return "cli"
    return mod.split(".")[1]


def allowed(src: str, dst: str) -> bool:
    """May module `src` import module `dst`?"""
    if src == FACADE:
        return True
    if dst == FACADE:
        return False
    a, b = layer(src), layer(dst)
    return a == b or RANK[b] < RANK[a]


def upward_imports() -> dict[tuple[str, str], str]:
    """Every import that runs upward or sideways, as (importer, imported) -> the two layers."""
    return {
        (src, dst): f"{layer(src)} -> {layer(dst)}"
        for src, targets in _graph().items()
        for dst in targets
        if not allowed(src, dst)
    }


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _graph() if m != FACADE and layer(m) not in RANK)
    assert not unplaced, f"modules outside the layers: {unplaced}; add their package to LAYERS (and CONTRIBUTING.md)"


def test_imports_point_down_the_layers():
    found = upward_imports()
    new = {edge: how for edge, how in found.items() if edge not in KNOWN_UPWARD}
    assert not new, "imports that run upward or sideways: " + "; ".join(
        f"{s} -> {d} ({h})" for (s, d), h in new.items()
    )
    gone = sorted(edge for edge in KNOWN_UPWARD if edge not in found)
    assert not gone, f"known exceptions no longer present, delete them from KNOWN_UPWARD: {gone}"


@pytest.mark.parametrize(
    "src, code, dst",
    [
        ("cspnet.models.net", "from cspnet.deploy.fuse import fuse_model", "cspnet.deploy.fuse"),
        ("cspnet.nn.layers", "def f():\n    from cspnet.models import create_model\n", "cspnet.models"),
        ("cspnet.data.images", "from cspnet.interop import timm", "cspnet.interop.timm"),
        ("cspnet.models.zoo", "from cspnet import create_model", "cspnet"),
        ("cspnet.models.zoo", "from ..engine import trainer", "cspnet.engine.trainer"),
        ("cspnet.nn.stages", "import importlib\nimportlib.import_module('cspnet.cli')", "cspnet.cli"),
        ("cspnet.engine.trainer", "from cspnet.engine.tasks import detect_cli", "cspnet.engine.tasks.detect_cli"),
    ],
)
def test_the_layer_check_sees_upward_imports(tmp_path, src, code, dst):
    """The check above can fail: an upward import, lazy, relative, dynamic or through the facade, is caught."""
    fake = tmp_path / "module.py"
    fake.write_text(code)
    assert _imports(fake, src) == {dst}
    assert not allowed(src, dst)


def test_type_checking_imports_are_exempt(tmp_path):
    fake = tmp_path / "module.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cspnet.models import CspNet\n")
    assert _imports(fake, "cspnet.nn.layers") == set()


def test_the_layers_are_written_down():
    order = " <- ".join(
        "{" + ", ".join(f"`{g}`" for g in groups) + "}" if len(groups) > 1 else f"`{groups[0]}`" for groups in LAYERS
    )
    assert order in (ROOT / "CONTRIBUTING.md").read_text(), f"CONTRIBUTING.md should state the layers as: {order}"


def test_no_import_circles():
    graph = _graph()
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


# what `cspnet --help` and `cspnet models` must not load: the detection task, its data, torchvision's detection
# models and ops (any `import torchvision` loads both)
DETECTION_STACK = ("cspnet.engine.tasks.detect", "cspnet.data.detection", "torchvision.ops", "torchvision.models")

# `python -X importtime -m cspnet.cli ARGS`, also listing sys.modules at exit: importtime logs import statements,
# not importlib.import_module (how COMMAND_MODULES and TASK_MODULES load)
RUN_CLI = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('sys.modules: ' + ' '.join(sys.modules) + '\\n'))\n"
    "sys.argv[1:] = sys.argv[2:]\n"
    "runpy.run_module('cspnet.cli', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["models"]])
def test_the_command_starts_without_the_detection_stack(argv):
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUN_CLI, "cspnet", *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    # "import time: <self us> | <cumulative us> | <indent><module>"
    timed = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    (at_exit,) = [line.split()[1:] for line in lines if line.startswith("sys.modules: ")]
    assert {"cspnet.cli_args", "cspnet.models"} <= timed and "cspnet.engine.cli" in at_exit  # both lists were read
    heavy = sorted(m for m in timed | set(at_exit) if m.startswith(DETECTION_STACK))
    assert not heavy, f"`cspnet {' '.join(argv)}` imports {heavy[:5]}"
