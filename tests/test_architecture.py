"""The shape of the package, read from its source (every import, function-level ones too).

- no module over 500 lines;
- no private name (``_name``) of one module used in another;
- a function-level import only with a one-line reason (a measured start-up
  cost, an optional dependency) in a comment on its line or the line above;
- no import cycle between modules;
- every top-level module or package sits on a layer of the import-linter
  contract in pyproject.toml (``lint-imports`` checks that imports point down).

Each failure lists every place at fault, ``path:line``.
"""

from __future__ import annotations

import ast
import io
import tokenize
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "domarkx"
MAX_LINES = 500


@dataclass(frozen=True)
class Module:
    name: str  # domarkx.data.store
    path: Path
    is_package: bool

    @property
    def where(self) -> str:
        return self.path.relative_to(REPO_ROOT).as_posix()


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


@cache
def source(module: Module) -> str:
    return module.path.read_text(encoding="utf-8")


@cache
def tree(module: Module) -> ast.Module:
    return ast.parse(source(module), str(module.path))


@cache
def comment_lines(module: Module) -> frozenset[int]:
    """The lines of ``module`` that hold a comment."""
    tokens = tokenize.generate_tokens(io.StringIO(source(module)).readline)
    return frozenset(tok.start[0] for tok in tokens if tok.type == tokenize.COMMENT)


def imported_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from X import ...`` names as X (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


@dataclass(frozen=True)
class Edge:
    importer: Module
    imported: str  # a module of the package
    line: int
    names: tuple[str, ...]  # what ``from X import a, b`` takes from X (empty for ``import X``)


def edges(module: Module) -> Iterator[Edge]:
    """Every import of a module of the package in ``module``, at any depth."""
    known = modules()
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield Edge(module, alias.name, node.lineno, ())
        elif isinstance(node, ast.ImportFrom):
            base = imported_from(module, node)
            if base != "domarkx" and not base.startswith("domarkx."):
                continue
            names = []
            for alias in node.names:
                if f"{base}.{alias.name}" in known:  # a submodule
                    yield Edge(module, f"{base}.{alias.name}", node.lineno, ())
                else:
                    names.append(alias.name)
            if names and base in known:
                yield Edge(module, base, node.lineno, tuple(names))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_is_over_500_lines() -> None:
    over = []
    for module in modules().values():
        count = len(source(module).splitlines())
        if count > MAX_LINES:
            over.append(f"{module.where}: {count} lines")
    assert over == [], f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_no_private_name_is_used_across_modules() -> None:
    """``from m import _x``, ``m._x`` and ``import m._x`` outside ``m`` itself."""
    found = []
    known = modules()
    for module in known.values():
        for edge in edges(module):
            if edge.imported == module.name:
                continue
            taken = [name for name in edge.names if is_private(name)]
            taken += [part for part in edge.imported.split(".")[1:] if is_private(part)]
            found += [f"{module.where}:{edge.line}: {edge.imported}.{name}" for name in taken]
        # Attributes of an imported module: ``stages._manager``.
        aliases: dict[str, str] = {}
        for node in ast.walk(tree(module)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = imported_from(module, node)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree(module)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != module.name
                and is_private(node.attr)
            ):
                found.append(f"{module.where}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert found == [], "private names used outside their module:\n" + "\n".join(sorted(found))


def defined_names(module: Module) -> set[str]:
    """The names ``module`` defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree(module)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def test_no_private_member_of_another_modules_object_is_used() -> None:
    """``box._describe(...)`` where ``_describe`` is defined in another module of the package.

    Objects are not typed here: a private name defined in another module of the
    package, and not in this one, is taken to be that module's.
    """
    own = {name: defined_names(module) for name, module in modules().items()}
    everywhere: dict[str, set[str]] = {}
    for name, names in own.items():
        for defined in names:
            if is_private(defined):
                everywhere.setdefault(defined, set()).add(name)
    found = []
    for module in modules().values():
        for node in ast.walk(tree(module)):
            if (
                isinstance(node, ast.Attribute)
                and is_private(node.attr)
                and node.attr in everywhere
                and node.attr not in own[module.name]
            ):
                owners = ", ".join(sorted(everywhere[node.attr]))
                found.append(f"{module.where}:{node.lineno}: .{node.attr} (defined in {owners})")
    assert found == [], "private members used outside their module:\n" + "\n".join(sorted(found))


def function_level_imports(module: Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree(module)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def test_every_function_level_import_says_why() -> None:
    """A comment on the import's lines or on the line above it (``# reason: ...``).

    Only a measured start-up cost or an optional dependency is a reason; an
    import that only hides a cycle goes to the top of the module instead.
    """
    silent = []
    for module in modules().values():
        comments = comment_lines(module)
        seen: set[int] = set()  # a nested function's imports are walked twice
        for node in function_level_imports(module):
            if node.lineno in seen:
                continue
            seen.add(node.lineno)
            end = node.end_lineno or node.lineno
            if not comments & set(range(node.lineno - 1, end + 1)):
                line = source(module).splitlines()[node.lineno - 1].strip()
                silent.append(f"{module.where}:{node.lineno}: {line}")
    assert silent == [], (
        f"{len(silent)} function-level imports without a reason comment:\n" + "\n".join(silent)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules() -> None:
    """Function-level imports count: one that only postpones a cycle still is one."""
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], str] = {}
    for module in modules().values():
        for edge in edges(module):
            if edge.imported != module.name:
                graph.setdefault(module.name, set()).add(edge.imported)
                lines.setdefault((module.name, edge.imported), f"{module.where}:{edge.line}")
    found = cycles(graph)
    shown = []
    for component in found:
        members = set(component)
        inside = sorted(
            f"  {lines[a, b]}: {a} -> {b}" for a in component for b in graph[a] & members
        )
        shown.append(" ".join(component) + "\n" + "\n".join(inside))
    assert found == [], "import cycles:\n" + "\n".join(shown)


def layers() -> list[set[str]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["type"] == "layers"]
    return [
        {name.strip().strip("()") for name in layer.replace(":", "|").split("|")}
        for layer in contract["layers"]
    ]


def test_every_top_level_module_sits_on_a_layer() -> None:
    placed = set().union(*layers())
    top = {name for name in modules() if name.count(".") == 1}
    unplaced = sorted(top - placed - {"domarkx.__main__"})
    assert unplaced == [], (
        "modules on no layer of [tool.importlinter] in pyproject.toml: " + ", ".join(unplaced)
    )


TESTS = REPO_ROOT / "tests"


def named_test_modules(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The test modules (``tests.test_*``) other than ``importer`` one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: every module of tests/ sits in the package ``tests``
            base = ".".join(["tests", *([node.module] if node.module else [])])
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    for name in names:
        parts = name.split(".")
        module = ".".join(parts[:2])
        if (
            parts[0] == "tests"
            and parts[1:2]
            and parts[1].startswith("test_")
            and module != importer
        ):
            yield module


def imports_of_test_modules(importer: str, text: str) -> list[tuple[int, str]]:
    """Every import of another test module in ``text``, at any depth: (line, module)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= {(node.lineno, name) for name in named_test_modules(importer, node)}
    return sorted(found)


def test_imports_of_test_modules_are_found() -> None:
    text = (
        "from tests.support import domarkx\n"
        "from tests.test_layers import ran\n"
        "from tests import support, test_checks\n"
        "from .test_tools import TOOLS\n"
        "from . import test_llm\n"
        "import tests.test_chat.sub as chat\n"
        "from tests.test_x import y\n"  # itself
        "def f():\n"
        "    from tests.test_parser import parse\n"
    )
    assert imports_of_test_modules("tests.test_x", text) == [
        (2, "tests.test_layers"),
        (3, "tests.test_checks"),
        (4, "tests.test_tools"),
        (5, "tests.test_llm"),
        (6, "tests.test_chat"),
        (9, "tests.test_parser"),
    ]


def test_no_module_of_the_tests_imports_a_test_module() -> None:
    """What tests share lives in support modules (tests/support.py, tests/*_support.py).

    A test module imported by another runs its module-level code twice over and
    ties two files together that are collected, sharded and edited apart.
    """
    found = []
    for path in sorted(TESTS.glob("*.py")):
        importer = f"tests.{path.stem}"
        for line, name in imports_of_test_modules(importer, path.read_text(encoding="utf-8")):
            found.append(f"tests/{path.name}:{line}: imports {name}")
    assert found == [], "test modules imported by other modules of tests/:\n" + "\n".join(found)
