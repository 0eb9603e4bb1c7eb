"""The package's layers, read from its source with ``ast``: no import cycle, MPI only in the runtime.

Every ``import`` and ``from ... import`` counts, function-level ones included (only those under
``if TYPE_CHECKING:`` do not, as they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "gdcode"

#: the MPI-free core: none of it may import the runtime, the command line or MPI
CORE = ("gdcode.codes", "gdcode.models", "gdcode.optim", "gdcode.delays", "gdcode.data", "gdcode.kernels",
        "gdcode.results", "gdcode.problem", "gdcode.options", "gdcode.modes", "gdcode.registry",
        "gdcode.rundir", "gdcode.checkpoint", "gdcode.simulate", "gdcode.mixing", "gdcode.sgd", "gdcode.errors",
        "gdcode.traces", "gdcode.markovfit", "gdcode.cachedir", "gdcode.procfs")
FORBIDDEN_IN_CORE = ("gdcode.runtime", "gdcode.cli", "gdcode.commands", "mpi4py")
#: the only places that may import mpi4py
MPI_ALLOWED = ("gdcode.runtime", "gdcode.commands.info")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, imported: str) -> str:
    """The gdcode module an import names: ``imported`` itself, or its longest known prefix."""
    name = imported
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or imported


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (gdcode modules resolved to files, others by top-level name)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(_resolve(name, alias.name) if alias.name.startswith("gdcode") else alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("gdcode"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in MODULES else _resolve(name, base))
            else:
                out.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(name)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_function_level_imports():
    assert "gdcode.runtime.session" in GRAPH["gdcode.commands.run"]  # imported inside main()
    assert "mpi4py" in GRAPH["gdcode.runtime.session"]


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH.get(v, ())):
            if w not in GRAPH:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, CORE)))
def test_the_core_never_imports_the_runtime_the_command_line_or_mpi(module):
    bad = sorted(i for i in GRAPH[module] if _within(i, FORBIDDEN_IN_CORE))
    assert not bad, f"{module} imports {bad}"


def test_only_the_runtime_and_info_import_mpi4py():
    bad = sorted(m for m, deps in GRAPH.items() if "mpi4py" in {d.partition(".")[0] for d in deps}
                 and not _within(m, MPI_ALLOWED))
    assert not bad, f"mpi4py imported outside runtime/ and commands/info.py: {bad}"
