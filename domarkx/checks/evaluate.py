"""Running the checks of one turn: the reply to a user message, up to the next one.

The text checks (``contains``, ``not-contains``, ``regex``) read the turn's
assistant text: the text and code its assistant messages wrote, as Markdown,
joined by blank lines (outputs and tool results left out). ``json-schema``
reads the last assistant message's text as JSON (a reply that is one fenced
block is read from inside the fence). ``tool-called`` looks at the calls the
turn's assistant messages made; ``max-tokens`` sums their
``usage.completion_tokens``. ``sh`` and ``python`` run in the session's
sandbox (``run_code``), seeing what the turn left; ``judge`` asks a model
(``Grader``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from domarkx.checks.spec import Check, Expect, schema_validator
from domarkx.data.models import CodeBlock, Message, TextBlock
from domarkx.execution.engine import BlockResult
from domarkx.llm.messages import render_code
from domarkx.llm.reply import calls_in

RunCode = Callable[[str, str], BlockResult]  # (language, code) -> what it did
DETAIL_MAX = 300  # characters of a result's detail


class Grader(Protocol):
    """What a ``judge`` check needs: a verdict on a turn against a rubric."""

    def grade(self, check: Check, turn: Turn) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class Result:
    """One check's outcome; ``record`` is what ``msg-metadata`` keeps."""

    kind: str
    passed: bool
    detail: str

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_record(cls, data: Any) -> Result | None:
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            return None
        return cls(str(data["kind"]), bool(data.get("passed")), str(data.get("detail", "")))


@dataclass
class Turn:
    """A user message and the messages that answer it."""

    question: Message
    replies: list[Message]

    @property
    def assistants(self) -> list[Message]:
        return [m for m in self.replies if m.role == "assistant"]

    def text(self) -> str:
        """The assistant's words and code, as Markdown."""
        return "\n\n".join(_message_text(m) for m in self.assistants).strip()

    def last_text(self) -> str:
        assistants = self.assistants
        return _message_text(assistants[-1]).strip() if assistants else ""

    def calls(self) -> list[tuple[str, Any]]:
        """Each tool call: its name and its arguments (parsed JSON, or the text)."""
        found = []
        for message in self.assistants:
            for call in calls_in(message.message_metadata):
                try:
                    args: Any = json.loads(call.arguments or "{}")
                except ValueError:
                    args = call.arguments
                found.append((call.name, args))
        return found

    def completion_tokens(self) -> int | None:
        total, counted = 0, False
        for message in self.assistants:
            usage = (message.message_metadata or {}).get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                total += usage["completion_tokens"]
                counted = True
        return total if counted else None


def _message_text(message: Message) -> str:
    parts = []
    for block in message.content:
        if isinstance(block, TextBlock) and block.value.strip():
            parts.append(block.value.strip("\n"))
        elif isinstance(block, CodeBlock):
            parts.append(render_code(block))
    return "\n\n".join(parts)


def turn_at(conversation: list[Message], user_index: int) -> Turn:
    """The turn that answers the user message at ``user_index``."""
    end = user_index + 1
    while end < len(conversation) and conversation[end].role != "user":
        end += 1
    return Turn(conversation[user_index], list(conversation[user_index + 1 : end]))


def last_assistant(conversation: list[Message], user_index: int) -> int | None:
    """The index of the turn's last assistant message (where results are recorded)."""
    found = None
    for index in range(user_index + 1, len(conversation)):
        if conversation[index].role == "user":
            break
        if conversation[index].role == "assistant":
            found = index
    return found


def run_checks(
    expect: Expect,
    turn: Turn,
    *,
    run_code: RunCode | None,
    grader: Grader | None,
) -> list[Result]:
    """Every check of ``expect`` on ``turn``, in order."""
    return [run_check(check, turn, run_code=run_code, grader=grader) for check in expect.checks]


def run_check(
    check: Check, turn: Turn, *, run_code: RunCode | None, grader: Grader | None
) -> Result:
    kind, arg = check.kind, check.arg
    if not turn.assistants and kind not in ("sh", "python"):
        return Result(kind, False, "no assistant message answers this user message")
    if kind == "contains":
        found = arg in turn.text()
        return Result(kind, found, f"found {arg!r}" if found else f"{arg!r} is not in the reply")
    if kind == "not-contains":
        text = turn.text()
        at = text.find(arg)
        if at < 0:
            return Result(kind, True, f"{arg!r} is not in the reply")
        return Result(kind, False, f"the reply says {_around(text, at, len(arg))}")
    if kind == "regex":
        match = re.search(arg, turn.text(), re.MULTILINE)
        if match is None:
            return Result(kind, False, f"no match for /{arg}/ in the reply")
        return Result(kind, True, f"matched {_clip(match.group(0))!r}")
    if kind == "tool-called":
        return _tool_called(check, turn)
    if kind == "json-schema":
        return _json_schema(check, turn)
    if kind == "max-tokens":
        tokens = turn.completion_tokens()
        if tokens is None:
            return Result(kind, False, "the turn's messages record no token counts (usage)")
        return Result(kind, tokens <= arg, f"{tokens} completion tokens (at most {arg})")
    if kind in ("sh", "python"):
        if run_code is None:
            return Result(kind, False, "no sandbox to run in")
        return _in_sandbox(check, run_code)
    if kind == "judge":
        if grader is None:
            return Result(kind, False, "no judge is configured")
        passed, reason = grader.grade(check, turn)
        return Result(kind, passed, _clip(reason))
    return Result(kind, False, f"unknown check kind {kind!r}")


def _tool_called(check: Check, turn: Turn) -> Result:
    name, want = check.arg, check.options.get("args")
    calls = turn.calls()
    named = [args for called, args in calls if called == name]
    if not named:
        made = ", ".join(sorted({c for c, _ in calls})) or "none"
        return Result(check.kind, False, f"`{name}` was not called (calls: {made})")
    if want is None:
        return Result(check.kind, True, f"`{name}` was called {len(named)} time(s)")
    for args in named:
        if isinstance(args, dict) and all(k in args and args[k] == v for k, v in want.items()):
            return Result(check.kind, True, f"`{name}` was called with {_json(want)}")
    seen = "; ".join(_json(a) for a in named[:3])
    return Result(check.kind, False, f"`{name}` was called, but with {_clip(seen)}")


def _json_schema(check: Check, turn: Turn) -> Result:
    text = turn.last_text()
    inner = _single_fence(text)
    try:
        data = json.loads(inner if inner is not None else text)
    except ValueError as err:
        return Result(check.kind, False, f"the reply is not JSON: {err}")
    validator = schema_validator(check.arg)(check.arg)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return Result(check.kind, True, "the reply is JSON of the schema")
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "the top level"
    return Result(check.kind, False, _clip(f"at {where}: {first.message}"))


def _single_fence(text: str) -> str | None:
    """The content of a reply that is one fenced block, else None."""
    match = re.fullmatch(r"(`{3,}|~{3,})[^\n]*\n(.*?)\n?\1\s*", text.strip(), re.DOTALL)
    return match.group(2) if match else None


def _in_sandbox(check: Check, run_code: RunCode) -> Result:
    language = "bash" if check.kind == "sh" else "python"
    result = run_code(language, check.arg)
    if result.ok:
        return Result(check.kind, True, "exit 0")
    said = (result.stderr.strip() or result.stdout.strip()).splitlines()
    tail = said[-1] if said else ""
    status = "timed out" if result.timed_out else f"exit {result.exit_code}"
    return Result(check.kind, False, _clip(f"{status}: {tail}" if tail else status))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def _around(text: str, at: int, size: int) -> str:
    start, end = max(0, at - 30), min(len(text), at + size + 30)
    return repr(_clip(text[start:end]))


def summarise_samples(expect: Expect, per_sample: list[list[Result]]) -> list[Result]:
    """Results of several samples as one list: each check, then the verdict of the samples.

    A check passes when at least ``pass-rate`` of the samples pass it; the last
    entry (kind ``samples``) passes when at least that many samples pass every check.
    """
    required = expect.required()
    count = len(per_sample)
    merged: list[Result] = []
    for n, check in enumerate(expect.checks):
        outcomes = [results[n] for results in per_sample if n < len(results)]
        passing = sum(r.passed for r in outcomes)
        failing = next((r.detail for r in outcomes if not r.passed), None)
        detail = f"passed in {passing} of {count} samples"
        if failing is not None:
            detail += f"; a failure: {failing}"
        merged.append(Result(check.kind, passing >= required, _clip(detail)))
    whole = sum(all(r.passed for r in results) for results in per_sample)
    merged.append(
        Result(
            "samples",
            whole >= required,
            f"{whole} of {count} samples passed every check (pass-rate {expect.pass_rate:g} "
            f"needs {required})",
        )
    )
    return merged
