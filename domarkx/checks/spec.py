"""The ``expect`` block: its two forms, its check kinds, and their validation.

A list of checks::

    - contains: "4"
    - tool-called: add
      args: {a: 2, b: 2}

or a mapping that also asks the model several times::

    samples: 5
    pass-rate: 0.8
    checks:
      - contains: "4"

Each check is a mapping with exactly one kind key (its argument) and that
kind's options. Everything wrong (an unknown kind or option, a regex that
does not compile, a JSON Schema that is not one, a judge endpoint the
project's configuration does not list) is one ``DocumentError`` naming the
document's line of the check.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from domarkx import config as project_config
from domarkx.data.models import CodeBlock, Message
from domarkx.errors import DocumentError
from domarkx.parsing.data import load_yaml

if TYPE_CHECKING:
    from domarkx.config import ProjectConfig

EXPECT_FLAG = "expect"

# kind -> (the argument's type, its options and their types)
KINDS: dict[str, tuple[type | tuple[type, ...], dict[str, type | tuple[type, ...]]]] = {
    "contains": (str, {}),
    "not-contains": (str, {}),
    "regex": (str, {}),
    "tool-called": (str, {"args": dict}),
    "json-schema": ((dict, bool), {}),
    "sh": (str, {}),
    "python": (str, {}),
    "judge": (str, {"endpoint": str, "model": str}),
    "max-tokens": (int, {}),
}
FORM_KEYS = ("samples", "pass-rate", "checks")
MAX_SAMPLES = 100


@dataclass(frozen=True)
class Check:
    """One check: its kind, its argument, its options, and its line in the document."""

    kind: str
    arg: Any
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    def label(self) -> str:
        """A short name for reports: the kind and the start of its argument."""
        text = self.arg if isinstance(self.arg, str) else str(self.arg)
        text = " ".join(text.split())
        return f"{self.kind}: {text[:60]}{'...' if len(text) > 60 else ''}"


@dataclass(frozen=True)
class Expect:
    """The checks of one user message, and how many samples must pass them."""

    checks: tuple[Check, ...]
    samples: int = 1
    pass_rate: float = 1.0
    line: int | None = None

    def required(self) -> int:
        """How many samples must pass every check."""
        return max(1, math.ceil(self.pass_rate * self.samples - 1e-9))


def is_expect(block: Any) -> bool:
    """Whether a content block is an ``expect`` block (``yaml expect``, ``json expect``)."""
    return isinstance(block, CodeBlock) and EXPECT_FLAG in block.flags


def expect_blocks(conversation: list[Message]) -> list[tuple[int, int, CodeBlock]]:
    """Each user message's expect block: message index, content index, block."""
    found = []
    for m, message in enumerate(conversation):
        if message.role != "user":
            continue
        for i, block in enumerate(message.content):
            if is_expect(block):
                assert isinstance(block, CodeBlock)
                found.append((m, i, block))
    return found


def parse_expect(
    block: CodeBlock,
    *,
    file: str,
    line: int | None,
    project: ProjectConfig | None = None,
) -> Expect:
    """Read and validate one expect block whose opening fence is at ``line``.

    ``project`` (the configuration) is needed to check a judge's endpoint;
    without it, endpoints are not checked.
    """
    fence = line or 0
    first = fence + 1 if line else 0

    def fail(message: str, at: int | None, hint: str) -> DocumentError:
        return DocumentError(message, file=file, line=at or line, hint=hint)

    if block.language not in ("yaml", "yml", "json", ""):
        raise fail(
            f"an expect block is YAML or JSON, not {block.language!r}",
            line,
            "write ```yaml expect",
        )
    data = load_yaml(block.code, file=file, first_line=first or 1, what="expect block")
    lines = _item_lines(block.code)
    samples, pass_rate = 1, 1.0
    items = data
    if isinstance(data, dict):
        unknown = [k for k in data if k not in FORM_KEYS]
        if unknown:
            raise fail(
                f"expect: unknown key {unknown[0]!r}",
                line,
                "the mapping form has samples, pass-rate and checks; a list holds the checks",
            )
        samples = data.get("samples", 1)
        if (
            isinstance(samples, bool)
            or not isinstance(samples, int)
            or not (1 <= samples <= MAX_SAMPLES)
        ):
            raise fail(
                f"expect: samples must be a whole number from 1 to {MAX_SAMPLES}",
                line,
                "write samples: 5",
            )
        rate = data.get("pass-rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise fail(
                "expect: pass-rate must be a number above 0 and at most 1",
                line,
                "write pass-rate: 0.8 (at least 80 % of the samples pass every check)",
            )
        pass_rate = float(rate)
        items = data.get("checks")
    if not isinstance(items, list) or not items:
        raise fail(
            "an expect block holds a list of checks (or a mapping with `checks`)",
            line,
            "write one `- kind: argument` line per check (docs/checks.md)",
        )
    checks = []
    for n, item in enumerate(items):
        at = first + lines[n] if line and n < len(lines) else line
        checks.append(_check(item, at, fail, project))
    return Expect(checks=tuple(checks), samples=samples, pass_rate=pass_rate, line=line)


def _check(item: Any, at: int | None, fail: Any, project: ProjectConfig | None) -> Check:
    if not isinstance(item, dict):
        raise fail(
            "a check is a mapping such as `- contains: text`",
            at,
            f"the kinds: {', '.join(KINDS)}",
        )
    kinds = [k for k in item if k in KINDS]
    if not kinds:
        key = next(iter(item), "")
        raise fail(f"unknown check kind {key!r}", at, f"the kinds: {', '.join(KINDS)}")
    if len(kinds) > 1:
        raise fail(
            f"one check has two kinds ({kinds[0]}, {kinds[1]})",
            at,
            "write each check as its own `- ` item",
        )
    kind = kinds[0]
    arg_type, option_types = KINDS[kind]
    arg = item[kind]
    if (isinstance(arg, bool) and arg_type is int) or not isinstance(arg, arg_type):
        want = "text" if arg_type is str else "a whole number" if arg_type is int else "a schema"
        hint = "see docs/checks.md"
        if isinstance(arg, bool) and arg_type is str:
            hint = "YAML reads yes, no, on, off, true and false as true or false: quote the text"
        raise fail(f"{kind}: the argument must be {want}", at, hint)
    options = {k: v for k, v in item.items() if k != kind}
    for key, value in options.items():
        if key not in option_types:
            known = ", ".join(option_types) or "none"
            raise fail(
                f"{kind}: unknown option {key!r} (options: {known})", at, "see docs/checks.md"
            )
        if not isinstance(value, option_types[key]):
            raise fail(f"{kind}: `{key}` has the wrong type", at, "see docs/checks.md")
    check = Check(kind=kind, arg=arg, options=options, line=at)
    _validate(check, at, fail, project)
    return check


def _validate(check: Check, at: int | None, fail: Any, project: ProjectConfig | None) -> None:
    kind, arg = check.kind, check.arg
    if kind in ("contains", "not-contains", "sh", "python", "judge", "tool-called") and not arg:
        raise fail(f"{kind}: the argument is empty", at, "see docs/checks.md")
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as err:
            raise fail(
                f"regex: {arg!r} is not a regular expression: {err}",
                at,
                "Python's `re` syntax; in YAML, quote it and double backslashes, or use '...'",
            ) from None
    elif kind == "max-tokens" and arg < 1:
        raise fail("max-tokens: the limit must be at least 1", at, "write max-tokens: 400")
    elif kind == "json-schema":
        try:
            schema_error = schema_problem(arg)
        except DocumentError as err:  # no jsonschema package: say so at the check's line
            raise fail(f"json-schema: {err.message}", at, err.hint or "") from None
        if schema_error is not None:
            raise fail(f"json-schema: {schema_error}", at, "see https://json-schema.org")
    elif kind == "judge":
        judge_problem(check, at, fail, project)


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a JSON Schema (None when it is one)."""
    validator = schema_validator(schema)
    try:
        validator.check_schema(schema)
    except Exception as err:  # jsonschema.SchemaError; its message names the fault
        message = getattr(err, "message", str(err))
        return f"not a valid JSON Schema: {message}"
    return None


def schema_validator(schema: Any) -> Any:
    """The jsonschema validator class for ``schema`` (an optional dependency)."""
    try:
        # reason: jsonschema is the `checks` extra, needed only by json-schema checks
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise DocumentError(
            "json-schema checks need the jsonschema package",
            hint="pip install 'domarkx[checks]'",
        ) from None
    return jsonschema.validators.validator_for(schema)


def judge_problem(check: Check, at: int | None, fail: Any, project: ProjectConfig | None) -> None:
    """A judge needs an endpoint and a model the configuration gives; errors name the line."""
    if project is None:
        return
    settings = getattr(project, "checks", None)
    endpoint = check.options.get("endpoint") or getattr(settings, "judge_endpoint", None)
    described = project.describe()
    if endpoint is None:
        raise fail(
            "judge: no endpoint to grade with",
            at,
            f"add `endpoint: NAME` to the check, or judge_endpoint under [checks] in {described}",
        )
    if endpoint not in project.endpoints:
        known = ", ".join(sorted(project.endpoints)) or "none"
        raise fail(
            f"judge: endpoint {endpoint!r} is not an endpoint of the project's configuration "
            f"(known: {known})",
            at,
            f'add to {described}:\n    [endpoints.{endpoint}]\n    base_url = "<the server\'s URL>"',
        )
    if check.options.get("model") is None and getattr(settings, "judge_model", None) is None:
        raise fail(
            "judge: no model to grade with",
            at,
            f"add `model: NAME` to the check, or judge_model under [checks] in {described}",
        )


def _item_lines(code: str) -> list[int]:
    """The 0-based line of each check item inside the block's text (YAML's own marks)."""
    try:
        node = yaml.compose(code, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "checks":
                node = value
                break
        else:
            return []
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line for item in node.value]


def written_config(root: Any) -> ProjectConfig:
    """The project's configuration as its file says, trusted or not.

    A check names an endpoint the file lists; whether the user's key may go there
    (trust) is decided when the judge is asked, and a recorded verdict replays either way.
    """
    read = getattr(project_config, "read", None)  # present where configurations are trusted
    found: ProjectConfig = read(root) if read is not None else project_config.load(root)
    return found


def validate_messages(
    conversation: list[Message],
    block_lines: list[list[int]] | None,
    *,
    file: str,
    project: ProjectConfig | None = None,
) -> dict[int, Expect]:
    """Every expect block of a parsed document, validated; by user message index.

    ``block_lines`` (``ParsedSession.block_lines``) gives each block's line. Samples
    are only for the last message (the one the model answers): the replies to an
    earlier message are written in the document.
    """
    found: dict[int, Expect] = {}
    for m, i, block in expect_blocks(conversation):
        line = None
        if block_lines is not None and m < len(block_lines) and i < len(block_lines[m]):
            line = block_lines[m][i]
        if m in found:
            raise DocumentError(
                "a second expect block in one message",
                file=file,
                line=line,
                hint="merge the two into one list of checks",
            )
        expect = parse_expect(block, file=file, line=line, project=project)
        if expect.samples > 1 and m != len(conversation) - 1:
            raise DocumentError(
                "samples: only the last user message is asked of the model; the replies to "
                "this one are written in the document",
                file=file,
                line=line,
                hint="remove `samples`, or move the question to the end of the session",
            )
        found[m] = expect
    return found
