"""The package's import graph: no cycles, and library code never imports a command-line module.

The graph is read from the source with :mod:`ast` (nothing is executed beyond
importing the packages to find their folders), over every module of every
package ``pyproject.toml`` installs. An import at a module's top level (also
inside a module-level ``if``/``try``/``with`` or a class body) runs when the
module is imported; an import inside a function runs when the function is
called ("deferred": kept for heavy libraries and ``--help`` speed). Imports
under ``if TYPE_CHECKING:`` never run and are ignored.

- Top-level imports must form no cycle at all: such a cycle is an import-order
  bug waiting to happen.
- Counting deferred imports too, the graph must still have no cycle: a deferred
  import that closes a circle only hides it (:data:`KNOWN_DEFERRED` is empty
  and stays so).
- CLI modules (``bitspike.cli`` and the ``<command>_cli`` modules) are leaves:
  no other module imports them, at the top or deferred.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import pkgutil
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Deferred imports allowed to close a circle, each (importer, imported). Empty since the layering of issue 12
#: (leaves: errors, io, ranges, ops.base/kernels/hooks/stream; then rtl_templates; then the op modules; then
#: the code that iterates the registry). Never add one: move the shared piece into a lower module instead.
KNOWN_DEFERRED: set[tuple[str, str]] = set()


def is_cli(module: str) -> bool:
    """A command-line module: the ``bitspike`` entry point or a ``<command>_cli`` module."""
    return module == "bitspike.cli" or module.rsplit(".", 1)[-1].endswith("_cli")


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the installed packages: name → (source file, is a package)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: dict[str, tuple[Path, bool]] = {}
    for pkg_name in config["tool"]["setuptools"]["packages"]:
        pkg = importlib.import_module(pkg_name)
        found[pkg_name] = (Path(pkg.__file__), True)
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            spec = importlib.util.find_spec(info.name)
            found[info.name] = (Path(spec.origin), info.ispkg)
    return found


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """The package modules an import statement loads (``from X import name`` is X.name when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.level:
        parts = module.split(".") if is_pkg else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        if sub in known:
            out.append(sub)
        elif base in known:
            out.append(base)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def graph() -> dict[str, dict[str, tuple[str, int]]]:
    """importer → {imported: (``"top"`` or ``"deferred"``, line)}, over the package's own modules."""
    known = modules()
    edges: dict[str, dict[str, tuple[str, int]]] = {}
    for name, (path, is_pkg) in known.items():
        out: dict[str, tuple[str, int]] = {}

        def visit(node: ast.AST, deferred: bool) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.orelse:
                    visit(child, deferred)
                return
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(name, is_pkg, node, known):
                    if target != name and (target not in out or out[target][0] == "deferred"):
                        out[target] = ("deferred" if deferred else "top", node.lineno)
            inner = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)

        visit(ast.parse(path.read_text(), str(path)), False)
        edges[name] = out
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = dfs(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = dfs(v)
            if found:
                return found
    return None


def _describe(cycle: list[str]) -> str:
    g = graph()
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        kind, line = g[a][b]
        steps.append(f"  {a} imports {b} ({kind}, {modules()[a][0].relative_to(ROOT)}:{line})")
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_the_walk_sees_every_package():
    names = set(modules())
    for expected in ("bitspike.manifest", "bitspike.gen.plan", "bitspike.sim.cosim", "bitspike.host.golden",
                     "bitspike.rtl_templates.synapse", "bitspike.sim.cocotb_tests.network_tb"):
        assert expected in names
    g = graph()
    assert g["bitspike.sim.icarus"]["bitspike.sim.design"][0] == "top"
    assert g["bitspike.sim.cosim"]["bitspike.sim.icarus"][0] == "deferred"
    assert "bitspike.gen.plan" not in g["bitspike.gen.timing"] or g["bitspike.gen.timing"]["bitspike.gen.plan"][0] != "top"


def test_no_cycle_among_top_level_imports():
    top = {a: {b for b, (kind, _) in out.items() if kind == "top"} for a, out in graph().items()}
    cycle = find_cycle(top)
    assert cycle is None, "import cycle at module level:\n" + _describe(cycle)


def test_no_cycle_counting_deferred_imports():
    g = graph()
    missing = sorted(e for e in KNOWN_DEFERRED if e[1] not in g.get(e[0], {}))
    assert not missing, f"KNOWN_DEFERRED lists imports that are gone: delete {missing}"
    edges = {a: {b for b in out if (a, b) not in KNOWN_DEFERRED} for a, out in g.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle (counting imports inside functions):\n" + _describe(cycle)


def test_library_code_never_imports_a_cli_module():
    bad = [f"{a} imports {b} ({kind}, {modules()[a][0].relative_to(ROOT)}:{line})"
           for a, out in graph().items() if not is_cli(a)
           for b, (kind, line) in out.items() if is_cli(b)]
    assert not bad, "library modules importing command-line modules:\n" + "\n".join(bad)


def test_every_command_module_is_named_after_its_command():
    from bitspike.cli import COMMAND_MODULES

    cli_modules = sorted(m for m in modules() if is_cli(m) and m != "bitspike.cli")
    assert sorted(COMMAND_MODULES) == cli_modules  # every <command>_cli module is registered, and only those
    for name in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        assert [f"{c}_cli" for c in sub.choices] == [name.rsplit(".", 1)[-1]], name


#: modules below the op modules: they import none of the package's other modules but each other
LEAVES = {"bitspike.errors", "bitspike.io", "bitspike.protocol", "bitspike.ranges", "bitspike.ops", "bitspike.ops.base",
          "bitspike.ops.kernels", "bitspike.ops.hooks", "bitspike.ops.stream"}


def test_layers_import_only_downwards():
    """Leaves import leaves; hardware templates import leaves and templates; op modules add ``gen.ir``."""
    g = graph()
    allowed = {}
    for name in modules():
        if name in LEAVES:
            allowed[name] = LEAVES
        elif name.startswith("bitspike.rtl_templates."):
            allowed[name] = LEAVES | {m for m in modules() if m.startswith("bitspike.rtl_templates")}
        elif name.startswith("bitspike.ops."):
            allowed[name] = (LEAVES | {"bitspike.gen", "bitspike.gen.ir"}
                             | {m for m in modules() if m.startswith(("bitspike.rtl_templates", "bitspike.ops."))})
    allowed["bitspike.gen.ir"] = LEAVES
    bad = [f"{a} imports {b} ({kind}, {modules()[a][0].relative_to(ROOT)}:{line})"
           for a, ok in allowed.items() for b, (kind, line) in g[a].items() if b not in ok]
    assert not bad, "imports against the layering (docs/ARCHITECTURE.md):\n" + "\n".join(bad)
