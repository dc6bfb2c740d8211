"""The tools helper that runs inside the sandbox's Python: schemas and calls of functions.

The functions a session's setup script defines live in the sandbox (the local
``python3`` process, or one in a container), so their JSON Schemas are derived
there and they are called there. This file is sent as it is to that process
(``install_code``), whose Python may be a minimal one (Debian's
``python3-minimal`` has no ``json`` module): it uses ``inspect``, ``typing``,
``traceback`` and ``io`` only, and nothing of domarkx. Values cross as Python
literals: domarkx writes the call's arguments (decoded from the model's JSON)
into the block with ``repr``, and reads the answer with ``ast.literal_eval``.
domarkx imports this module too, to check arguments against a schema
(``check``) and in tests.

The protocol (docs/engines.md, "Tools"): every answer is one line on stdout,
``MARK`` followed by the ``repr`` of a dict of plain values.

- ``describe(globals(), names)``: ``{"tools": [function, ...], "problems":
  {name: why}, "builtins": {name: built-in}}``; ``names`` None reads the older
  format's ``tools = [f, g]``; ``builtins`` names the functions that stand for a
  built-in tool (the older format's imports, ``domarkx.llm.sandbox_builtins``).
  Each function is ``{"name", "description", "parameters"}``.
- ``call(name, arguments)``: ``{"ok": bool, "output": printed text, "result":
  the returned value if plain (str, numbers, lists, dicts...) else its repr,
  "plain": bool, "error": text or None}``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
import traceback
import typing

MARK = "\x1edomarkx-tools:"
MODULE = "_domarkx_tools"

# What describe() found, by tool name: the callable and its parameters schema.
registry: dict[str, typing.Any] = {}

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(hint: object) -> dict[str, typing.Any]:
    """The JSON Schema of one type hint (``{}`` means any value)."""
    if hint is inspect.Parameter.empty or hint is typing.Any:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if hint is list or hint is tuple or hint is set:
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return _literal(args)
    if origin is typing.Union or (
        sys.version_info >= (3, 10) and origin is getattr(__import__("types"), "UnionType", None)
    ):
        return _union(args)
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is ...):
        schema: dict[str, typing.Any] = {"type": "array"}
        if args and args[0] is not typing.Any:
            schema["items"] = schema_of(args[0])
        return schema
    if origin is tuple:
        return {"type": "array", "prefixItems": [schema_of(a) for a in args]}
    if origin is dict:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not typing.Any:
            schema["additionalProperties"] = schema_of(args[1])
        return schema
    if origin is getattr(typing, "Annotated", ()):
        return schema_of(args[0])
    return {}


def _literal(values: tuple[typing.Any, ...]) -> dict[str, typing.Any]:
    kinds = {_SIMPLE.get(type(v)) for v in values}
    schema: dict[str, typing.Any] = {"enum": list(values)}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), "enum": list(values)}
    return schema


def _union(args: tuple[typing.Any, ...]) -> dict[str, typing.Any]:
    options = [a for a in args if a is not type(None)]
    nullable = len(options) < len(args)
    if len(options) == 1:
        inner = schema_of(options[0])
        if not nullable:
            return inner
        kind = inner.get("type")
        if isinstance(kind, str):
            widened = dict(inner, type=[kind, "null"])
            if "enum" in widened:
                widened["enum"] = [*widened["enum"], None]
            return widened
        if not inner:
            return {}
        return {"anyOf": [inner, {"type": "null"}]}
    schemas = [schema_of(a) for a in options]
    if nullable:
        schemas.append({"type": "null"})
    return {} if any(not s for s in schemas) else {"anyOf": schemas}


def description_of(function: object) -> str:
    """The first paragraph of the docstring, its lines joined by spaces."""
    doc = inspect.getdoc(function) or ""
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())


def describe_function(function: object, name: str | None = None) -> dict[str, typing.Any]:
    """``{"name", "description", "parameters"}`` of one function (its JSON Schema)."""
    signature = inspect.signature(function)  # type: ignore[arg-type]
    try:
        hints = typing.get_type_hints(function)
    except Exception:
        hints = {}
    properties: dict[str, typing.Any] = {}
    required = []
    extra = False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            extra = True
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_ONLY):
            continue
        schema = schema_of(hints.get(parameter.name, parameter.annotation))
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _plain(parameter.default):
            schema = dict(schema, default=parameter.default)
        properties[parameter.name] = schema
    parameters: dict[str, typing.Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
    }
    if not extra:
        parameters["additionalProperties"] = False
    return {
        "name": name or getattr(function, "__name__", "tool"),
        "description": description_of(function),
        "parameters": parameters,
    }


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is JSON data: it survives ``repr`` -> ``literal_eval`` -> JSON."""
    if depth > 50:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def check(schema: dict[str, typing.Any], value: object, where: str = "arguments") -> str | None:
    """Why ``value`` does not fit ``schema`` (the subset ``schema_of`` writes), or None."""
    if "anyOf" in schema:
        if any(check(s, value, where) is None for s in schema["anyOf"]):
            return None
        return f"{where} fits none of the allowed types"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {', '.join(_show(v) for v in schema['enum'])}"
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(k, value) for k in kinds):
            return f"{where} must be {' or '.join(_article(k) for k in kinds)}"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = check(schema["items"], item, f"{where}[{i}]")
            if problem:
                return problem
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                return f"{where} lack the required `{name}`"
        for name, item in value.items():
            if name in properties:
                problem = check(properties[name], item, f"`{name}`")
            elif schema.get("additionalProperties") is False:
                problem = f"`{name}` is not a parameter"
            elif isinstance(schema.get("additionalProperties"), dict):
                problem = check(schema["additionalProperties"], item, f"`{name}`")
            else:
                problem = None
            if problem:
                return problem
    return None


def _is(kind: str, value: object) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "array": list, "object": dict}
    if kind == "null":
        return value is None
    return isinstance(value, types.get(kind, object))


def _article(kind: str) -> str:
    return {"integer": "an integer", "array": "an array", "object": "an object"}.get(
        kind, "null" if kind == "null" else f"a {kind}"
    )


def _show(value: object) -> str:
    """A value as JSON writes it (for messages): null, true, "text"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _emit(data: dict[str, typing.Any]) -> None:
    sys.stdout.flush()
    sys.stdout.write(MARK + repr(data) + "\n")
    sys.stdout.flush()


def describe(namespace: dict[str, typing.Any], names: list[typing.Any] | None) -> None:
    """Answer with the schemas of ``names`` (functions of ``namespace``), or of ``tools``."""
    found: list[typing.Any] = []
    problems: dict[str, typing.Any] = {}
    builtins: dict[str, str] = {}  # name -> the built-in tool a function stands for
    if names is None:
        declared = namespace.get("tools")
        pairs = []
        if isinstance(declared, (list, tuple)):
            pairs = [(getattr(f, "__name__", None), f) for f in declared if callable(f)]
    else:
        pairs = [(name, namespace.get(name)) for name in names]
    registry.clear()
    for name, function in pairs:
        if not name:
            continue
        if function is None:
            problems[name] = "the setup script defines no such function"
            continue
        if not callable(function):
            problems[name] = f"it is a {type(function).__name__}, not a function"
            continue
        try:
            spec = describe_function(function, name)
        except (TypeError, ValueError) as exc:
            problems[name] = f"its signature cannot be read: {exc}"
            continue
        registry[name] = (function, spec["parameters"])
        found.append(spec)
        builtin = getattr(function, "__domarkx_tool__", None)
        if isinstance(builtin, str):
            builtins[name] = builtin
    _emit({"tools": found, "problems": problems, "builtins": builtins})


def call(name: str, values: dict[str, typing.Any]) -> None:
    """Call one function with ``values`` (the decoded arguments); answer with what it
    printed and returned."""
    out = io.StringIO()
    answer: dict[str, typing.Any] = {
        "ok": False,
        "output": "",
        "result": None,
        "plain": True,
        "error": None,
    }
    try:
        entry = registry.get(name)
        if entry is None:
            raise _Refused(f"unknown tool `{name}`")
        function, parameters = entry
        problem = check(parameters, values)
        if problem:
            raise _Refused(f"the arguments do not fit `{name}`: {problem}")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                result = function(**values)
            except Exception as exc:
                # The first frame is this function's own: the model needs only its code's.
                tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
                answer["error"] = "".join(traceback.format_exception(type(exc), exc, tb))
                result = None
        if answer["error"] is None:
            answer["ok"] = True
            answer["plain"] = _plain(result)
            answer["result"] = result if answer["plain"] else repr(result)
    except _Refused as refused:
        answer["error"] = str(refused)
    answer["output"] = out.getvalue()
    _emit(answer)


class _Refused(Exception):
    """The call cannot be made: unknown name, arguments that do not fit."""


# --- domarkx's side ---------------------------------------------------------------


def source() -> str:
    """This file's text: what ``install_code`` sends to the sandbox."""
    import pathlib  # not at the top: this file also runs in the sandbox's Python

    return pathlib.Path(__file__).read_text(encoding="utf-8")


def install_code() -> str:
    """A block that loads this helper as module ``MODULE`` in the sandbox's Python.

    It adds no name to the session's globals (the block is one expression).
    """
    return (
        "(lambda m: ("
        f"exec(compile({source()!r}, '<domarkx-tools>', 'exec'), m.__dict__), "
        f"__import__('sys').modules.__setitem__({MODULE!r}, m)))"
        f"(__import__('types').ModuleType({MODULE!r}))\n"
    )


def describe_code(names: list[str] | None) -> str:
    """The block that asks for the schemas of ``names`` (None: the setup script's ``tools``)."""
    return f"__import__({MODULE!r}).describe(globals(), {names!r})\n"


def call_code(name: str, values: dict[str, typing.Any]) -> str:
    """The block that calls one tool with its arguments (JSON data, written as literals)."""
    return f"__import__({MODULE!r}).call({name!r}, {values!r})\n"


def answer_of(stdout: str) -> tuple[dict[str, typing.Any] | None, str]:
    """The helper's answer in a block's stdout, and whatever else was printed before it."""
    import ast  # not at the top: this file also runs in the sandbox's Python

    at = stdout.rfind(MARK)
    if at < 0:
        return None, stdout
    line = stdout[at + len(MARK) :].split("\n", 1)[0]
    try:
        data = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None, stdout
    return (data if isinstance(data, dict) else None), stdout[:at]
