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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from domarkx.errors import DomarkxError

# "ask": ask on a terminal, stop without one; "auto": run everything; "never": refuse all.
Mode = Literal["ask", "auto", "never"]
MODES: tuple[Mode, ...] = ("ask", "auto", "never")

# What a terminal prompt answers: run this one, refuse this one, run this and every next one.
Answer = Literal["yes", "no", "always"]

# The result a refused call records, so that the model and the reader both see it.
NOT_RUN = "not run: the user did not approve running this code"


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
        """True: run it. False: the user said no (record ``NOT_RUN``). Raises when none can ask."""
        if isolated or self.mode == "auto" or self._always:
            return True
        if self.mode == "never":
            return False
        if self.ask is None:
            raise ApprovalRequired(
                f"{request.where}: the model wrote {request.language} code to run on this "
                f"machine ({request.engine} engine), and nothing approves it",
                file=request.session,
                hint='pass --yes, set approve = "auto" in domarkx.toml, run it on a terminal '
                "to be asked, or use `engine: docker`",
            )
        answer = self.ask(request)
        if answer == "always":
            self._always = True
        return answer in ("yes", "always")
