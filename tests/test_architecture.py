"""The shape of the package: imports flow one way, no import circles, ``__all__`` is true.

Read from the source (every ``import``, including those under ``TYPE_CHECKING`` and inside
functions: a lazy import is still a dependency), so nothing here depends on what happens to
be imported at run time.

The layers, lowest first; a module may import its own layer and those below, never above:

1. primitives: errors, files, objects (files on S3), clocks, crypto, executors (where tasks
   run), YAML documents and validation (``fabric.config.documents``,
   ``fabric.config.validation``);
2. core: config, then sources, store, resolve, the expression language (whose functions
   include resolution's normalisers), rules, features, in that order (a core package
   imports only the core packages before it, and itself);
3. ``fabric.project``, which assembles the core;
4. services: ``fabric.services``, ``fabric.sync``, ``fabric.demo``;
5. adapters: ``fabric.api``, ``fabric.cli``, ``fabric.__main__``.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fabric

ROOT = Path(fabric.__file__).parent

PRIMITIVES = (
    "fabric",
    "fabric.errors",
    "fabric.files",
    "fabric.objects",
    "fabric.clock",
    "fabric.crypto",
    "fabric.executors",
    "fabric.config.documents",
    "fabric.config.validation",
)
#: Core packages in the order they may depend on one another.
CORE = ("config", "sources", "store", "resolve", "expressions", "rules", "features")
SERVICES = ("fabric.services", "fabric.sync", "fabric.demo")
ADAPTERS = ("fabric.api", "fabric.cli", "fabric.__main__")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module of ours, and the name it takes (if any)."""

    source: str
    target: str
    name: str | None
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    return (ROOT.parent / Path(*name.split("."))).with_suffix(".py").exists() or (
        ROOT.parent / Path(*name.split(".")) / "__init__.py"
    ).exists()


def imports_of(path: Path) -> Iterator[Import]:
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fabric":
                    yield Import(source, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "fabric":
                continue
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                if is_module(submodule):
                    yield Import(source, submodule, None, node.lineno)
                else:
                    yield Import(source, module, alias.name, node.lineno)


MODULES = sorted(ROOT.rglob("*.py"))
IMPORTS = [found for path in MODULES for found in imports_of(path)]


def layer(module: str) -> tuple[int, int]:
    """(layer, rank inside the core) of a module of ours."""
    if module in PRIMITIVES:
        return (1, 0)
    if module.startswith(ADAPTERS):
        return (5, 0)
    if module.startswith(SERVICES):
        return (4, 0)
    if module == "fabric.project":
        return (3, 0)
    package = module.split(".")[1]
    assert package in CORE, f"{module} is in no layer: add it to one in {__file__}"
    return (2, CORE.index(package))


def test_every_module_is_in_a_layer() -> None:
    for path in MODULES:
        layer(module_name(path))


def test_imports_flow_one_way() -> None:
    upward = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if i.source != i.target and layer(i.target) > layer(i.source)
    ]
    assert upward == []


def test_the_core_never_imports_an_adapter() -> None:
    core = [i for i in IMPORTS if layer(i.source)[0] <= 3]
    assert core, "no core module read"
    assert [f"{i.source} imports {i.target}" for i in core if i.target.startswith(ADAPTERS)] == []


def test_no_import_circles() -> None:
    """No module reaches itself through the imports of others (Tarjan's strongly connected
    components over the module graph; a package's ``__init__`` is not implied by importing
    one of its modules, as that is Python's mechanics, not a dependency of ours)."""
    graph: dict[str, set[str]] = {module_name(p): set() for p in MODULES}
    for found in IMPORTS:
        if found.target != found.source and found.target in graph:
            graph[found.source].add(found.target)
    assert circles(graph) == []


def test_no_circles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        source, target = found.source.split(".")[:2], found.target.split(".")[:2]
        graph.setdefault(".".join(source), set())
        if source != target:
            graph[".".join(source)].add(".".join(target))
    assert circles(graph) == []


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or a node on itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circles_are_found() -> None:
    """The check itself: a circle of three and a self-import are found, a chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}}) == [["a"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_names_taken_from_a_module_are_in_its_all() -> None:
    """A name imported from another module of ours is one that module offers in
    ``__all__`` (its own helpers stay its own)."""
    missing = []
    for found in IMPORTS:
        if found.name is None:
            continue
        offered = getattr(importlib.import_module(found.target), "__all__", None)
        if offered is None or found.name not in offered:
            missing.append(f"{found.source} takes {found.name} from {found.target}")
    assert missing == []


def test_every_all_names_what_its_module_defines() -> None:
    for path in MODULES:
        if path.name == "__main__.py":
            continue  # importing it runs the CLI
        module = importlib.import_module(module_name(path))
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module.__name__}.__all__ lists {name}"


def test_private_modules_are_used_only_inside_their_package() -> None:
    strays = []
    for found in IMPORTS:
        parts = found.target.split(".")
        for at, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                package = ".".join(parts[:at])
                if found.source != package and not found.source.startswith(package + "."):
                    strays.append(f"{found.source} imports {found.target}")
    assert strays == []
