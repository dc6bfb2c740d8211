"""JSON Schemas derived from function signatures by the sandbox helper (stdlib only).

Hypothesis writes setup scripts with random signatures (type hints, defaults, docstrings);
the schema the helper derives must say exactly what the source says. The derivation runs
in-process for speed, and through the real sandboxes (local Python, the minimal Python of the
Docker image) for a few signatures, which must give the same schemas.
"""

from __future__ import annotations

import ast
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import ExecutionConfig
from domarkx.execution.local_shell import LocalShellEngine
from domarkx.llm import sandbox_tools
from tests.dockerutil import PYTHON_IMAGE, require_image


@dataclass(frozen=True)
class Hint:
    """A type hint as source text, the schema it stands for, and a value of it."""

    source: str
    schema: dict[str, Any]
    sample: Any


SIMPLE = [
    Hint("str", {"type": "string"}, "text"),
    Hint("int", {"type": "integer"}, 3),
    Hint("float", {"type": "number"}, 1.5),
    Hint("bool", {"type": "boolean"}, True),
    Hint("dict", {"type": "object"}, {"k": 1}),
    Hint("list", {"type": "array"}, [1, "a"]),
    Hint("typing.Any", {}, None),
]


def _nested(inner: st.SearchStrategy[Hint]) -> st.SearchStrategy[Hint]:
    return st.one_of(
        inner.map(
            lambda h: Hint(f"list[{h.source}]", {"type": "array", "items": h.schema}, [h.sample])
        ),
        inner.map(
            lambda h: Hint(
                f"dict[str, {h.source}]",
                {"type": "object", "additionalProperties": h.schema},
                {"k": h.sample},
            )
        ),
    )


def _optional(h: Hint) -> Hint:
    schema = dict(h.schema)
    if isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    elif schema:
        schema = {"anyOf": [h.schema, {"type": "null"}]}
    return Hint(f"typing.Optional[{h.source}]", schema, None)


literals = st.lists(
    st.text(alphabet="abcxyz", min_size=1, max_size=4), min_size=1, max_size=4, unique=True
).map(
    lambda vs: Hint(
        f"typing.Literal[{', '.join(map(repr, vs))}]", {"type": "string", "enum": vs}, vs[0]
    )
)
concrete = st.one_of(st.sampled_from([h for h in SIMPLE if h.schema]), literals)
hints = st.recursive(concrete, _nested, max_leaves=3)
any_hint = st.one_of(hints, hints.map(_optional), st.just(SIMPLE[-1]), st.none())

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n) and n not in ("typing", "tools")
)
words = st.text(alphabet="abcdefgh ", min_size=1, max_size=20).map(str.strip).filter(bool)


@st.composite
def functions(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A function's source and the schema it must get."""
    params = draw(
        st.lists(st.tuples(names, any_hint, st.booleans()), max_size=5, unique_by=lambda p: p[0])
    )
    paragraphs = draw(st.lists(st.lists(words, min_size=1, max_size=3), max_size=3))
    # Parameters with defaults come last (Python's rule); keyword-only ones may have none.
    params.sort(key=lambda p: p[2])
    properties: dict[str, Any] = {}
    required = []
    parts = []
    for name, hint, has_default in params:
        text = name if hint is None else f"{name}: {hint.source}"
        schema = {} if hint is None else dict(hint.schema)
        if has_default:
            default = None if hint is None else hint.sample
            text += f" = {default!r}"
            schema["default"] = default
        else:
            required.append(name)
        parts.append(text)
        properties[name] = schema
    doc = "\n\n    ".join("\n    ".join(lines) for lines in paragraphs)
    source = (
        f"def tool_fn({', '.join(parts)}):\n"
        + (f'    """{doc}"""\n' if doc else "")
        + "    return 1\n"
    )
    expected = {
        "name": "tool_fn",
        "description": " ".join(paragraphs[0]) if paragraphs else "",
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }
    return source, expected


def derive(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"typing": __import__("typing")}
    exec(compile(source, "<setup>", "exec"), namespace)
    return sandbox_tools.describe_function(namespace["tool_fn"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(functions())
def test_the_schema_says_what_the_signature_says(case):
    source, expected = case
    assert derive(source) == expected


@settings(max_examples=100, deadline=None)
@given(functions(), st.data())
def test_arguments_built_from_the_signature_fit_and_a_missing_one_does_not(case, data):
    _source, expected = case
    parameters = expected["parameters"]
    arguments = {
        name: data.draw(st.sampled_from([v for v in _samples(schema)]))
        for name, schema in parameters["properties"].items()
        if name in parameters["required"] or data.draw(st.booleans())
    }
    assert sandbox_tools.check(parameters, arguments) is None
    if parameters["required"]:
        missing = dict(arguments)
        del missing[parameters["required"][0]]
        assert "lack the required" in (sandbox_tools.check(parameters, missing) or "")
    assert "is not a parameter" in (
        sandbox_tools.check(parameters, {**arguments, "zz_extra": 1}) or ""
    )


def _samples(schema: dict[str, Any]) -> list[Any]:
    """Values that fit ``schema``."""
    if "default" in schema:
        return [schema["default"]]
    if not schema:
        return [None, 1, "x"]
    if "anyOf" in schema:
        return [None]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [None]
    if "enum" in schema:
        return list(schema["enum"])
    if kind == "array":
        return [[], [v for v in _samples(schema["items"])[:1]]] if "items" in schema else [[1]]
    if kind == "object":
        extra = schema.get("additionalProperties")
        return [{}, {"k": _samples(extra)[0]}] if isinstance(extra, dict) else [{"a": 1}]
    samples: dict[str, list[Any]] = {
        "string": ["s"],
        "integer": [0, -4],
        "number": [0.5, 2],
        "boolean": [False],
    }
    return samples[str(kind)]


# --- through the real sandboxes ---------------------------------------------------------

SETUP = '''
from typing import Literal, Optional


def search(query: str, limit: int = 10, kinds: Optional[list[Literal["md", "py"]]] = None,
           exact: bool = False, weights: dict[str, float] = {}) -> list:
    """Find notes that mention a text.

    The rest of the docstring stays out of the description.
    """
    return [query] * min(limit, 2)


def untyped(a, b=None, *args, **kwargs):
    return a
'''


def _through(engine) -> list[dict[str, Any]]:
    engine.start()
    try:
        assert engine.run("python", SETUP, 30).ok
        result = engine.run(
            "python",
            sandbox_tools.install_code() + sandbox_tools.describe_code(["search", "untyped"]),
            30,
        )
        answer, before = sandbox_tools.answer_of(result.stdout)
        assert answer is not None, result.stderr
        assert before == "" and result.stderr == ""
        # The helper left nothing in the session's globals.
        names = engine.run(
            "python", "print(sorted(k for k in globals() if not k.startswith('__')))", 30
        )
        assert names.stdout.strip() == "['Literal', 'Optional', 'search', 'untyped']"
        return answer["tools"]
    finally:
        engine.stop()


def _in_process() -> list[dict[str, Any]]:
    namespace: dict[str, Any] = {}
    exec(SETUP, namespace)
    return [sandbox_tools.describe_function(namespace[n], n) for n in ("search", "untyped")]


def test_the_local_sandbox_derives_the_same_schemas(tmp_path: Path):
    tools = _through(LocalShellEngine(ExecutionConfig(), tmp_path))
    assert tools == _in_process()
    search, untyped = tools
    assert search["description"] == "Find notes that mention a text."
    assert search["parameters"]["properties"]["kinds"] == {
        "type": ["array", "null"],
        "items": {"type": "string", "enum": ["md", "py"]},
        "default": None,
    }
    assert untyped["parameters"] == {
        "type": "object",
        "properties": {"a": {}, "b": {"default": None}},
        "required": ["a"],
    }


@pytest.mark.docker
def test_the_minimal_python_of_the_docker_image_derives_the_same_schemas(tmp_path: Path):
    from domarkx.execution.docker import DockerEngine

    image = require_image(PYTHON_IMAGE)
    tools = _through(DockerEngine(ExecutionConfig(engine="docker", image=image), tmp_path))
    assert tools == _in_process()


def test_the_helper_needs_nothing_but_the_minimal_standard_library():
    """Debian's python3-minimal has no json: the helper must not import it (nor domarkx)."""
    tree = ast.parse(sandbox_tools.source())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= {
        "__future__",
        "contextlib",
        "inspect",
        "io",
        "sys",
        "traceback",
        "typing",
        "ast",
        "pathlib",
    }


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(functions(), min_size=1, max_size=4))
def test_generated_signatures_get_the_same_schemas_through_the_local_sandbox(tmp_path, cases):
    sources = [
        source.replace("def tool_fn(", f"def tool_fn{i}(") for i, (source, _) in enumerate(cases)
    ]
    engine = LocalShellEngine(ExecutionConfig(), tmp_path)
    engine.start()
    try:
        assert engine.run("python", "import typing\n" + "\n".join(sources), 30).ok
        wanted = [f"tool_fn{i}" for i in range(len(cases))]
        result = engine.run(
            "python", sandbox_tools.install_code() + sandbox_tools.describe_code(wanted), 30
        )
    finally:
        engine.stop()
    answer, _ = sandbox_tools.answer_of(result.stdout)
    assert answer is not None, result.stderr
    expected = [dict(schema, name=f"tool_fn{i}") for i, (_, schema) in enumerate(cases)]
    assert answer["tools"] == expected
