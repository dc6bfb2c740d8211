"""Sessions that talk to sessions: the session tools, which run on the host.

``create_session``, ``send_message``, ``get_messages``, ``list_sessions`` and
``archive_session`` act on the project's ``sessions/`` folder only: a name
that leads out of it (``..``, an absolute path, a link to elsewhere) is
refused. ``send_message`` appends a ``## user`` message to the other session's
document and answers it as ``domarkx chat`` does (``ChatSession``: the same
grants, approval and replay records); the reply is the tool's result, and the
whole exchange stays in that document. ``[agents] max_depth`` bounds how deep
messages nest (A asks B, which asks C...), ``max_messages`` how many one
command's sessions send in all; past either, the call is an error result that
names the setting.

This module sits on the session layer, above ``chat``; a command that runs a
session hands ``Agents(...).tools()`` to its ``InstanceManager`` (or
``ChatSession``), so that the model turn below reaches these tools without
importing them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from domarkx import config as project_config
from domarkx.data.atomic import write_atomic
from domarkx.data.layout import SESSIONS_DIR, TEMPLATES_DIR
from domarkx.data.models import Message, TextBlock
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.llm.builtin_tools import HostTool, HostToolError, tool_spec
from domarkx.parsing.source import front_matter_end, split_front_matter
from domarkx.session.approval import Approval
from domarkx.session.chat import ChatSession
from domarkx.session.export import render_messages
from domarkx.session.snapshot import SnapshotManager

TEMPLATES = TEMPLATES_DIR  # sessions/templates/<name>.md
ARCHIVE = "archive"  # sessions/archive/<topic>/<name>.md

_NAME = {"type": "string", "description": "A session's name: its path under sessions/, no .md."}
SPECS: dict[str, dict[str, Any]] = {
    spec["name"]: spec
    for spec in (
        tool_spec(
            "create_session",
            "Create a session from a template of the project (sessions/templates/NAME.md); "
            "the parameters become its macro params.",
            template_name=({"type": "string"}, True),
            session_name=(_NAME, True),
            parameters=({"type": "object", "additionalProperties": {"type": "string"}}, False),
        ),
        tool_spec(
            "send_message",
            "Send a message to a session of the project; it answers, and its reply is the "
            "result. The message and the reply are written into that session's document.",
            session_name=(_NAME, True),
            message=({"type": "string"}, True),
        ),
        tool_spec(
            "get_messages",
            "The messages of a session of the project, as its document writes them.",
            session_name=(_NAME, True),
        ),
        tool_spec(
            "list_sessions", "The project's sessions (not templates or archived), one a line."
        ),
        tool_spec(
            "archive_session",
            "Move a session to sessions/archive/TOPIC/.",
            session_name=(_NAME, True),
            topic=({"type": "string"}, True),
        ),
    )
}


@dataclass
class Budget:
    """The messages one command's sessions have sent, shared by every depth."""

    sent: int = 0


@dataclass
class Agents:
    """The session tools of one session of one command.

    ``chain`` holds the documents whose answers are under way (the command's
    own first, when known): their depth, and the sessions that cannot be sent a
    message now (their file would change under their own chat).
    """

    store: Store
    approval: Approval
    chain: tuple[Path, ...] = ()
    budget: Budget = field(default_factory=Budget)
    depth: int = 0  # how many send_message calls this session's answer is nested in
    # Where the sessions are (None: the project's sessions/); templates are always the
    # project's sessions/templates/. A build gives each run a workspace of its own.
    workspace: Path | None = None
    empty_first: bool = False  # the workspace is emptied before the first call uses it

    @classmethod
    def for_build(cls, store: Store, name: str, approval: Approval) -> Agents:
        """The session tools of session ``name``'s build run: they create and message
        sessions in ``Layout.agents_dir(name)``, emptied first, and never touch
        ``sessions/``; so a build writes the same documents each time, and only its own."""
        workspace = Path(store.layout.abs(store.layout.agents_dir(name)))
        return cls(store, approval, workspace=workspace, empty_first=True)

    @property
    def folder(self) -> Path:
        if self.workspace is None:
            return Path(self.store.root) / SESSIONS_DIR
        if self.empty_first:  # at the first call: a run that calls none leaves it be
            if self.workspace.exists():
                shutil.rmtree(self.workspace)
            self.workspace.mkdir(parents=True)
            self.empty_first = False
        return self.workspace

    @property
    def templates(self) -> Path:
        return Path(self.store.root) / SESSIONS_DIR / TEMPLATES

    def tools(self) -> dict[str, HostTool]:
        functions: dict[str, Callable[[dict[str, Any]], str]] = {
            "create_session": self.create_session,
            "send_message": self.send_message,
            "get_messages": self.get_messages,
            "list_sessions": self.list_sessions,
            "archive_session": self.archive_session,
        }
        return {name: HostTool(SPECS[name], run) for name, run in functions.items()}

    # Paths ----------------------------------------------------------------------
    def path_of(self, name: str, *, under: str = "", must_exist: bool = True) -> Path:
        """``sessions/[under/]name.md``, refused unless it stays inside ``sessions/``."""
        text = str(name).strip()
        if not text or "\x00" in text or "\\" in text or os.path.isabs(text):
            raise HostToolError(f"`{name}` is not a session name (a path under sessions/)")
        parts = Path(text).parts
        if any(part in ("..", ".") for part in parts):
            raise HostToolError(f"`{name}`: a session name stays inside sessions/ (no `..`)")
        relative = Path(under, text)
        if relative.suffix != ".md":
            relative = relative.with_name(relative.name + ".md")
        path = self.folder / relative
        real = path.resolve()
        if not real.is_relative_to(self.folder.resolve()):
            raise HostToolError(f"`{name}` leads out of sessions/ (a link to elsewhere)")
        if must_exist and not real.is_file():
            raise HostToolError(f"no session `{name}` (sessions/{relative.as_posix()})")
        return path

    def name_of(self, path: Path) -> str:
        """``path``'s session name (its path under sessions/, no .md)."""
        real, folder = Path(path).resolve(), self.folder.resolve()
        inside = real.is_relative_to(folder)
        return (real.relative_to(folder) if inside else Path(real.name)).with_suffix("").as_posix()

    # The tools --------------------------------------------------------------------
    def template_of(self, name: str) -> Path:
        """``sessions/templates/name.md``, refused unless it stays inside that folder."""
        text = str(name).strip()
        parts = Path(text).parts
        if not text or "\\" in text or os.path.isabs(text) or ".." in parts or "\x00" in text:
            raise HostToolError(f"`{name}` is not a template name (a path under {self.shown})")
        path = self.templates / (text if text.endswith(".md") else text + ".md")
        if not path.resolve().is_relative_to(self.templates.resolve()):
            raise HostToolError(f"`{name}` leads out of sessions/{TEMPLATES}/ (a link)")
        if not path.is_file():
            raise HostToolError(f"no template `{name}` (sessions/{TEMPLATES}/{text}.md)")
        return path

    @property
    def shown(self) -> str:
        return f"sessions/{TEMPLATES}/"

    def create_session(self, arguments: dict[str, Any]) -> str:
        template = self.template_of(str(arguments["template_name"]))
        target = self.path_of(str(arguments["session_name"]), must_exist=False)
        if target.exists():
            raise HostToolError(f"session `{arguments['session_name']}` exists already")
        if self.workspace is None and self.name_of(target).split("/")[0] == TEMPLATES:
            raise HostToolError("a session is not created among the templates")
        text = template.read_text(encoding="utf-8")
        parameters = {str(k): str(v) for k, v in (arguments.get("parameters") or {}).items()}
        write_atomic(target, with_params(text, parameters, str(template)))
        return f"created session `{self.name_of(target)}` from template `{template.stem}`"

    def send_message(self, arguments: dict[str, Any]) -> str:
        path = self.path_of(str(arguments["session_name"]))
        name = self.name_of(path)
        settings = project_config.load(self.store.root).agents
        if any(path.resolve() == other.resolve() for other in self.chain):
            raise HostToolError(
                f"`{name}` is waiting for this answer (a session cannot message itself "
                "or a session that is messaging it)"
            )
        if self.depth + 1 > settings.max_depth:
            route = " -> ".join([*(self.name_of(p) for p in self.chain), name])
            raise HostToolError(
                f"[agents] max_depth = {settings.max_depth} reached: {route}; "
                "answer without sending more messages"
            )
        if self.budget.sent >= settings.max_messages:
            raise HostToolError(
                f"[agents] max_messages = {settings.max_messages} reached: this command's "
                "sessions sent that many messages; answer without sending more"
            )
        self.budget.sent += 1
        deeper = Agents(
            self.store,
            self.approval,
            (*self.chain, path),
            self.budget,
            self.depth + 1,
            self.workspace,
        )
        chat = ChatSession(self.store, path, approval=self.approval, host_tools=deeper.tools())
        try:
            chat.prepare(str(arguments["message"]))
            chat.start()
            added = chat.answer()
        except DomarkxError as err:
            chat.close(failed=True)
            raise HostToolError(f"session `{name}` did not answer: {err.message}") from None
        chat.close()
        return reply_text(added) or f"session `{name}` answered with no text"

    def get_messages(self, arguments: dict[str, Any]) -> str:
        path = self.path_of(str(arguments["session_name"]))
        text = path.read_text(encoding="utf-8")
        try:
            parsed = SnapshotManager(self.store).parse_text(text, path)
        except DomarkxError as err:
            raise HostToolError(f"`{self.name_of(path)}` cannot be read: {err.message}") from None
        return render_messages(parsed.messages).strip("\n") or "(no messages)"

    def list_sessions(self, arguments: dict[str, Any]) -> str:
        names = []
        for path in sorted(self.folder.rglob("*.md")):
            first = path.relative_to(self.folder).parts[0]
            if first in (TEMPLATES, ARCHIVE) or first.startswith(("_", ".")):
                continue
            names.append(self.name_of(path))
        return "\n".join(names) or "(no sessions)"

    def archive_session(self, arguments: dict[str, Any]) -> str:
        path = self.path_of(str(arguments["session_name"]))
        if any(path.resolve() == other.resolve() for other in self.chain):
            raise HostToolError(f"`{self.name_of(path)}` is in use by this conversation")
        topic = str(arguments["topic"]).strip().strip("/")
        name = self.name_of(path)
        target = self.path_of(f"{topic}/{name}", under=ARCHIVE, must_exist=False)
        if target.exists():
            raise HostToolError(f"sessions/{ARCHIVE}/{topic}/{name}.md exists already")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        return f"moved `{name}` to sessions/{ARCHIVE}/{topic}/{name}.md"


def with_params(text: str, parameters: dict[str, str], display: str) -> str:
    """The template's text with ``parameters`` added to its front matter's ``params``."""
    if not parameters:
        return text
    front, _, _ = split_front_matter(text, display)
    end = front_matter_end(text.split("\n")) or 0
    params = dict(front.get("params") or {})
    params.update(parameters)
    head = yaml.safe_dump({**front, "params": params}, sort_keys=False, allow_unicode=True)
    # After the closing `---` (line ``end``), or the whole text when it had none.
    body = "\n".join(text.split("\n")[end + 1 :]) if end else "\n" + text
    return f"---\n{head}---\n{body}"


def reply_text(messages: list[Message]) -> str:
    """What a session answered: its final answer (``attempt_completion``), else the text
    of its last assistant message."""
    for message in reversed(messages):
        final = message.role == "tool" and (message.message_metadata or {}).get("final") is True
        if message.role == "assistant" or final:
            text = "\n\n".join(b.value for b in message.content if isinstance(b, TextBlock))
            if text.strip() or final:
                return text.strip()
    return ""
