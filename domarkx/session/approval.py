"""Whether model-written code may run: one rule for the code loop, tools and chat.

A document only asks; the user grants (tools-chat-trust spec, section 3).
Code that a model wrote (code-loop blocks, ``bash``/``python`` tool calls)
runs without asking in an engine that isolates it (``Engine.isolated``, the
Docker engine). Elsewhere (``local_shell``) it runs only when approved: by
``--yes``, by ``approve = "auto"`` in the project's configuration, or by the
user's answer on a terminal. With no way to ask, ``ApprovalRequired`` stops
the run before the call, keeping everything done until then. Functions of the
session's own setup script are the user's code and never come here.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from domarkx import config
from domarkx.errors import DomarkxError

# ``DOMARKX_YES=1 doit``: what ``--yes`` is to ``domarkx run`` and ``domarkx build``.
YES_ENV = "DOMARKX_YES"

# "ask": ask on a terminal, stop without one; "auto": run everything; "never": refuse all.
Mode = Literal["ask", "auto", "never"]
MODES: tuple[Mode, ...] = ("ask", "auto", "never")

# What a terminal prompt answers: run this one, refuse this one, run this and every next one.
Answer = Literal["yes", "no", "always"]


class ApprovalRequired(DomarkxError):
    """Model-written code needs the user's approval and there is no terminal to ask."""


@dataclass(frozen=True)
class CodeRequest:
    """One piece of model-written code that wants to run."""

    session: str  # the session's file (or snapshot), for messages
    where: str  # e.g. "message 7 (assistant), code block 1" or "tool call call_1 (bash)"
    engine: str  # the engine's registry name
    language: str
    code: str


@dataclass
class Approval:
    """The user's grant for one command; ``ask`` is the terminal prompt (None: no terminal)."""

    mode: Mode = "ask"
    ask: Callable[[CodeRequest], Answer] | None = None
    _always: bool = field(default=False, repr=False)

    def decide(self, request: CodeRequest, *, isolated: bool) -> bool:
        """True: run it. False: the user said no (``BlockResult.not_run``). Raises when none can ask."""
        if isolated or self.mode == "auto" or self._always:
            return True
        if self.mode == "never":
            return False
        if self.ask is None:
            raise ApprovalRequired(
                f"{request.where}: the model wrote {request.language} code to run on this "
                f"machine ({request.engine} engine), and nothing approves it:\n"
                + shown_code(request.code),
                file=request.session,
                hint='pass --yes (`DOMARKX_YES=1 doit` for doit), set approve = "auto" in '
                "domarkx.toml, run it on a terminal to be asked, or use `engine: docker`",
            )
        answer = self.ask(request)
        if answer == "always":
            self._always = True
        return answer in ("yes", "always")


def yes_from_env() -> bool:
    """Whether ``DOMARKX_YES`` grants every call (``1``, ``true``, ``yes``)."""
    return os.environ.get(YES_ENV, "").strip().lower() in ("1", "true", "yes")


def on_terminal() -> bool:
    """Whether a person can be asked: stdin and stderr are both terminals."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def for_project(root: str | os.PathLike[str], *, yes: bool = False) -> Approval:
    """The grant of one command: ``--yes`` (or ``DOMARKX_YES``), else ``approve`` of the
    project's configuration; asking on a terminal when there is one."""
    mode = config.load(Path(root)).approve  # read (and checked) even when --yes overrides it
    if yes or yes_from_env():
        return Approval(mode="auto")
    return Approval(mode=mode, ask=terminal_prompt if on_terminal() else None)


_prompt_lock = threading.Lock()
# Seconds spent at the prompt by this process so far: a build's elapsed time leaves
# out the time it waited for the user (``waited``).
_waited = [0.0]


def waited() -> float:
    """Seconds this process has spent waiting at the approval prompt, all prompts together."""
    return _waited[0]


# Characters a terminal acts on instead of showing: C0 controls but tab and line
# feed, DEL, C1 controls, and the bidirectional overrides and isolates that
# reorder what is shown ("Trojan Source").
_HIDDEN = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)}
_HIDDEN.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
_HIDDEN.update({0x0D: "\\r", 0x1B: "\\x1b", 0x08: "\\b", 0x07: "\\a"})
_HIDDEN.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``).

    What the user is asked to approve, and a model's reply streamed to a
    terminal, must be what they see (tools-chat-trust spec, section 3.3).
    """
    return text.translate(_HIDDEN)


# How many lines of refused code an error shows (a prompt shows them all).
SHOWN_LINES = 20


def shown_code(code: str) -> str:
    """``code`` as an error shows it: indented lines, control characters visible."""
    lines = code.split("\n")
    shown = [f"  | {visible(line)}" for line in lines[:SHOWN_LINES]]
    if len(lines) > SHOWN_LINES:
        shown.append(f"  | ... ({len(lines) - SHOWN_LINES} more lines)")
    return "\n".join(shown)


def terminal_prompt(
    request: CodeRequest, stdin: TextIO | None = None, stderr: TextIO | None = None
) -> Answer:
    """Show the code on stderr and read yes / no / always from stdin (end of input: no).

    One question at a time, even when a build runs sessions in threads.
    """
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    with _prompt_lock:
        shown_at = time.monotonic()
        try:
            return _prompt(request, stdin, stderr)
        finally:
            _waited[0] += time.monotonic() - shown_at


def _prompt(request: CodeRequest, stdin: TextIO, stderr: TextIO) -> Answer:
    """``terminal_prompt``'s question, asked under its lock."""
    stderr.write(
        visible(
            f"\n{request.session}: {request.where}: the model wants to run this "
            f"{request.language} code on this machine ({request.engine} engine):"
        )
        + "\n"
    )
    for line in request.code.split("\n"):
        # Escape sequences (colours, cursor moves, a carriage return) are shown, not
        # obeyed: the code approved is the code that runs.
        stderr.write(f"  | {visible(line)}\n")
    while True:
        stderr.write("run it? [y]es / [n]o / [a]lways: ")
        stderr.flush()
        answer = stdin.readline()
        if not answer:
            stderr.write("\n")
            return "no"
        word = answer.strip().lower()
        if word in ("y", "yes"):
            return "yes"
        if word in ("n", "no"):
            return "no"
        if word in ("a", "always"):
            return "always"
