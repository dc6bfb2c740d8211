"""What ``migrate`` does with an older setup script's tool declarations and imports.

- ``FunctionTool(f)`` (autogen's wrapper) of a plain function ``f`` that the
  setup script defines becomes ``f`` itself (a description given to
  ``FunctionTool`` becomes ``f``'s docstring when it has none): domarkx derives
  the tool's schema from the function. The import of ``FunctionTool`` goes when
  nothing else uses it.
- What cannot be converted is a ``Problem`` naming its line: ``FunctionTool``
  of anything else (a lambda, a method, a value), a name or description other
  than the function's own, an ``async`` function; an import of a ``domarkx.``
  module that the sandbox does not provide (``domarkx.llm.sandbox_builtins``).
  ``migrate`` then changes nothing and exits 1.

Lines are 1-based in the setup script; the caller adds the fence's place.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from domarkx.llm.sandbox_builtins import OlderImports

WRAPPER = "FunctionTool"


@dataclass(frozen=True)
class Problem:
    """One thing of a setup script that ``migrate`` cannot convert."""

    line: int  # in the setup script, 1-based
    what: str


def _wrapper_names(tree: ast.Module) -> set[str]:
    """The names under which the script imported autogen's ``FunctionTool``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autogen_core"):
            names |= {a.asname or a.name for a in node.names if a.name == WRAPPER}
    return names


def _is_wrapper(call: ast.Call, names: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in names
    return isinstance(func, ast.Attribute) and func.attr == WRAPPER


def _docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    return ast.get_docstring(node)


def _offset(lines: list[str], line: int, col: int) -> int:
    """The text offset of ``ast`` position (1-based line, UTF-8 byte column)."""
    before = sum(len(text) + 1 for text in lines[: line - 1])
    return before + len(lines[line - 1].encode("utf-8")[:col].decode("utf-8", "replace"))


def convert(code: str) -> tuple[str, list[Problem]]:
    """``code`` with its ``FunctionTool(f)`` declarations converted, and what cannot be."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, []  # not Python that can be read: the run will say so
    problems = _missing_imports(tree)
    names = _wrapper_names(tree)
    defs = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    lines = code.split("\n")
    spans: list[tuple[int, int, str]] = []  # text offsets to replace, with what
    docstrings: dict[str, str] = {}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_wrapper(n, names)]
    for call in calls:
        shown = ast.unparse(call)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        target = call.args[0] if call.args else keywords.pop("func", None)
        if not (isinstance(target, ast.Name) and target.id in defs):
            problems.append(
                Problem(
                    call.lineno,
                    f"`{shown}` wraps something other than a function this setup script "
                    "defines; write a plain function and name it in session-config `tools`",
                )
            )
            continue
        function = defs[target.id]
        if isinstance(function, ast.AsyncFunctionDef):
            problems.append(
                Problem(
                    call.lineno, f"`{shown}`: `{target.id}` is async; a tool is a plain function"
                )
            )
            continue
        given = keywords.get("name")
        if given is not None and not (isinstance(given, ast.Constant) and given.value == target.id):
            problems.append(
                Problem(call.lineno, f"`{shown}`: a tool is named after its function here")
            )
            continue
        description = keywords.get("description") or (call.args[1] if len(call.args) > 1 else None)
        if description is not None:
            if not (isinstance(description, ast.Constant) and isinstance(description.value, str)):
                problems.append(Problem(call.lineno, f"`{shown}`: the description is not a string"))
                continue
            doc = _docstring(function)
            if doc is None:
                if function.body[0].lineno == function.lineno:  # `def f(): return 1`
                    problems.append(
                        Problem(call.lineno, f"`{shown}`: give `{target.id}` a docstring")
                    )
                    continue
                docstrings[target.id] = description.value
            elif doc.strip() != description.value.strip():
                problems.append(
                    Problem(
                        call.lineno,
                        f"`{shown}`: the description differs from `{target.id}`'s docstring, "
                        "which is what the model reads; make them one",
                    )
                )
                continue
        assert call.end_lineno is not None and call.end_col_offset is not None
        start = _offset(lines, call.lineno, call.col_offset)
        end = _offset(lines, call.end_lineno, call.end_col_offset)
        spans.append((start, end, target.id))
    if problems or not spans:
        return code, problems
    for start, end, name in sorted(spans, reverse=True):
        code = code[:start] + name + code[end:]
    return _without_wrapper_import(_with_docstrings(code, docstrings), names), []


def _with_docstrings(code: str, docstrings: dict[str, str]) -> str:
    """``code`` with each function of ``docstrings`` given that docstring."""
    if not docstrings:
        return code
    tree = ast.parse(code)
    lines = code.split("\n")
    for node in sorted(tree.body, key=lambda n: -n.lineno):
        if isinstance(node, ast.FunctionDef) and node.name in docstrings:
            first = node.body[0]
            indent = lines[first.lineno - 1][: first.col_offset]
            text = docstrings[node.name].replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
            lines.insert(first.lineno - 1, f'{indent}"""{text}"""')
    return "\n".join(lines)


def _without_wrapper_import(code: str, names: set[str]) -> str:
    """``code`` less the ``FunctionTool`` import, when it imports that alone and no use is left."""
    tree = ast.parse(code)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    drop = set()
    for node in tree.body:
        if (
            isinstance(node, ast.ImportFrom)
            and len(node.names) == 1
            and node.names[0].name == WRAPPER
            and (node.names[0].asname or WRAPPER) in names - used
        ):
            drop |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return "\n".join(line for i, line in enumerate(code.split("\n"), 1) if i not in drop)


def _missing_imports(tree: ast.Module) -> list[Problem]:
    """Imports of ``domarkx.`` modules or names that the sandbox does not provide."""
    provided = OlderImports().tree
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if ".".join(module.split(".")[:2]) not in provided:
                continue  # not the older tool modules (domarkx's own, or no domarkx)
            if module not in provided:
                problems.append(
                    Problem(
                        node.lineno,
                        f"the older module `{module}` has no "
                        "equivalent in domarkx's sandbox; remove the import",
                    )
                )
                continue
            missing = [
                a.name for a in node.names if a.name != "*" and a.name not in provided[module]
            ]
            if missing:
                problems.append(
                    Problem(
                        node.lineno,
                        f"`{module}` has no {', '.join(f'`{m}`' for m in missing)} in "
                        "domarkx's sandbox; remove the name (docs/llm.md lists what it has)",
                    )
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                older = ".".join(alias.name.split(".")[:2]) in provided
                if older and alias.name not in provided:
                    problems.append(
                        Problem(
                            node.lineno,
                            f"the older module `{alias.name}` has no "
                            "equivalent in domarkx's sandbox; remove the import",
                        )
                    )
    return problems
