"""Code lenses, hover, completion and go to definition over a document's text.

Positions here are 0-based lines and columns counted in Python characters;
the server converts them to the editor's units.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from domarkx import config as project_config
from domarkx import registry
from domarkx.data.models import ExecutionConfig, ModelSettings
from domarkx.errors import DomarkxError
from domarkx.lsp.document import Document
from domarkx.parsing.blocks import FencedCode, blocks
from domarkx.parsing.fences import parse_info
from domarkx.parsing.macro_links import command_and_params, find_macros
from domarkx.parsing.markdown import ROLE_ALIASES, load_json, load_yaml, split_front_matter
from domarkx.session.files import document_root
from domarkx.session.snapshot import SnapshotManager

# The commands a code lens runs (``workspace/executeCommand``), with the CLI command each is.
ANSWER = "domarkx.answer"  # domarkx chat FILE
REGENERATE = "domarkx.regenerate"  # domarkx chat FILE --regenerate
FORK = "domarkx.fork"  # domarkx fork FILE --messages N -o NEW
RUN = "domarkx.run"  # domarkx import FILE, then domarkx run
COMMANDS = (ANSWER, REGENERATE, FORK, RUN)

# How many lines of an included file a hover shows.
HOVER_LINES = 12

_ROLE_PREFIX = re.compile(r"^ {0,3}##[ \t]+(?P<word>\w*)$")
_KEY_PREFIX = re.compile(r"^(?P<indent>[ \t]*)(?P<word>[A-Za-z_]*)$")
_VALUE_PREFIX = re.compile(r"^[ \t]*(?P<key>endpoint|engine|provider)[ \t]*:[ \t]*(?P<word>\S*)$")
_INCLUDE_PREFIX = re.compile(r"domarkx://include/?\?(?:[^)\s]*&)?path=(?P<path>[^)&\s]*)$")


@dataclass(frozen=True)
class Lens:
    line: int  # 0-based
    title: str
    command: str
    arguments: list[Any]


@dataclass(frozen=True)
class Macro:
    """One macro link on one line: where it stands, its command and parameters."""

    line: int  # 0-based
    start: int
    end: int
    text: str  # the whole link, extra-parameter links included
    command: str
    params: dict[str, str]


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # "role", "key", "value", "file", "folder"
    detail: str = ""


# --- code lenses -------------------------------------------------------------------------


def lenses(doc: Document, uri: str) -> list[Lens]:
    """Run (on the first line), Fork here (every message), Answer, Regenerate."""
    try:
        parsed = doc.parse()
    except DomarkxError:
        return []  # the diagnostics say why
    found = [Lens(0, "Run", RUN, [uri])]
    roles = [m.role for m in parsed.messages]
    for index, line in enumerate(parsed.message_lines):
        found.append(Lens(line - 1, "Fork here", FORK, [uri, index + 1]))
    if roles and roles[-1] == "user":
        found.append(Lens(parsed.message_lines[-1] - 1, "Answer", ANSWER, [uri]))
    elif "user" in roles:
        last_user = len(roles) - 1 - roles[::-1].index("user")
        reply = next((i for i in range(last_user + 1, len(roles)) if roles[i] == "assistant"), None)
        if reply is not None:
            found.append(Lens(parsed.message_lines[reply] - 1, "Regenerate", REGENERATE, [uri]))
    return sorted(found, key=lambda lens: lens.line)


# --- macros ------------------------------------------------------------------------------


def _fences(doc: Document) -> list[FencedCode]:
    try:
        _, lines, _ = split_front_matter(doc.text, doc.display)
    except DomarkxError:
        lines = doc.lines
    return [block for block in blocks(lines) if isinstance(block, FencedCode)]


def _fence_at(doc: Document, line: int) -> FencedCode | None:
    return next((f for f in _fences(doc) if f.start <= line < f.end), None)


def macro_at(doc: Document, line: int, column: int) -> Macro | None:
    """The macro link under the cursor (not one in a fenced block, escaped or an image)."""
    if not 0 <= line < len(doc.lines) or "domarkx://" not in doc.lines[line]:
        return None
    text = doc.lines[line]
    for match in find_macros(text):
        start = match.start()
        if not start <= column <= match.end():
            continue
        if start > 0 and text[start - 1] in "\\!":
            return None
        if _fence_at(doc, line) is not None or line < _body_start(doc):
            return None
        command, params = command_and_params(match)
        return Macro(line, start, match.end(), match.group(0), command, params)
    return None


def include_target(doc: Document, macro: Macro) -> Path | None:
    """The file an include macro names, when it exists inside the project."""
    if macro.command != "include" or not macro.params.get("path"):
        return None
    target = (doc.path.parent / macro.params["path"]).resolve()
    if not target.is_relative_to(document_root(doc.path, doc.root)) or not target.is_file():
        return None
    return target


def expansion(doc: Document, macro: Macro) -> str:
    """What the macro expands to at import (a ``DomarkxError`` when it cannot).

    The macro alone goes the way of an import, at its own line of the document,
    after the document's front matter (its ``params``): the same expander, with
    the project's include and size limits.
    """
    body = _body_start(doc)
    text = "\n".join([*doc.lines[:body], *[""] * (macro.line - body), macro.text])
    manager = SnapshotManager(doc.store)
    expanded, _ = manager.expand(manager.parse_text(text, doc.path))
    return expanded.preamble or ""


def _body_start(doc: Document) -> int:
    """The 0-based line after the front matter (0 without one, or with a broken one)."""
    try:
        return split_front_matter(doc.text, doc.display)[2]
    except DomarkxError:
        return 0


def hover(doc: Document, line: int, column: int) -> str | None:
    """Markdown for the hover at a position: a macro's expansion, a msg-metadata summary."""
    macro = macro_at(doc, line, column)
    if macro is not None:
        return macro_hover(doc, macro)
    fence = _fence_at(doc, line)
    if fence is not None and parse_info(fence.info).special == "msg-metadata":
        return metadata_summary(fence)
    return None


def macro_hover(doc: Document, macro: Macro) -> str:
    try:
        value = expansion(doc, macro)
    except DomarkxError as err:
        return f"**{macro.command}**: cannot expand: {err.message}"
    if macro.command == "include":
        target = include_target(doc, macro)
        where = display(doc, target) if target is not None else macro.params.get("path", "")
        lines = value.split("\n")
        shown = "\n".join(lines[:HOVER_LINES])
        more = f"\n\n… {len(lines) - HOVER_LINES} more lines" if len(lines) > HOVER_LINES else ""
        return f"**include** `{where}`\n\n```markdown\n{shown}\n```{more}"
    if registry.find("domarkx.macros", macro.command) is None:
        return f"**parameter** `{macro.command}` = `{value}`"
    return f"**{macro.command}** → `{value}`"


def display(doc: Document, path: Path) -> str:
    try:
        return path.relative_to(doc.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def metadata_summary(fence: FencedCode) -> str:
    """model, usage and latency of a ``msg-metadata`` block, in one line."""
    info = parse_info(fence.info)
    loader = load_json if info.language == "json" else load_yaml
    try:
        data = loader(fence.code, file="msg-metadata", first_line=fence.start + 2, what="msg")
    except DomarkxError as err:
        return f"msg-metadata: {err.message}"
    if not isinstance(data, dict):
        return "msg-metadata: not a mapping"
    model = data.get("model") or "—"
    if data.get("provider"):
        model = f"{model} ({data['provider']})"
    usage = data.get("usage")
    if isinstance(usage, dict) and usage:
        tokens = f"{usage.get('prompt_tokens', '?')} prompt + {usage.get('completion_tokens', '?')} completion tokens"
    else:
        tokens = "not recorded"
    latency = "not recorded"
    for key, unit in (("latency", "s"), ("latency_ms", "ms"), ("duration", "s")):
        if isinstance(data.get(key), int | float):
            latency = f"{data[key]} {unit}"
            break
    return f"model: {model} · usage: {tokens} · latency: {latency}"


# --- completion ---------------------------------------------------------------------------


def complete(doc: Document, line: int, column: int) -> list[Completion]:
    """Roles after ``## ``, session-config keys and values, include paths."""
    if not 0 <= line < len(doc.lines):
        return []
    before = doc.lines[line][:column]
    include = _INCLUDE_PREFIX.search(before)
    if include is not None:
        return _paths(doc, unquote(include.group("path")))
    fence = _fence_at(doc, line)
    if fence is None:
        if _ROLE_PREFIX.match(before):
            return [Completion(role, "role") for role in ROLE_ALIASES]
        return []
    if parse_info(fence.info).special != "session-config" or line == fence.start:
        return []
    value = _VALUE_PREFIX.match(before)
    if value is not None:
        return _values(doc, value.group("key"))
    key = _KEY_PREFIX.match(before)
    if key is None:
        return []
    fields: dict[str, Any] = dict(ExecutionConfig.model_fields)
    if key.group("indent"):
        parent = _parent_key(doc.lines[fence.start + 1 : line], len(key.group("indent")))
        if parent != "model":
            return []
        fields = dict(ModelSettings.model_fields)
    return [
        Completion(name, "key", (info.description or "").split("\n")[0])
        for name, info in fields.items()
    ]


def _parent_key(lines: list[str], indent: int) -> str | None:
    for text in reversed(lines):
        stripped = text.lstrip()
        if stripped and len(text) - len(stripped) < indent:
            return stripped.split(":", 1)[0].strip()
    return None


def _values(doc: Document, key: str) -> list[Completion]:
    if key == "endpoint":
        try:
            endpoints = project_config.load(doc.root).endpoints
        except DomarkxError:
            return []
        return [Completion(name, "value", e.base_url) for name, e in sorted(endpoints.items())]
    group = "domarkx.engines" if key == "engine" else "domarkx.providers"
    return [Completion(name, "value") for name in registry.names(group)]


def _paths(doc: Document, typed: str) -> list[Completion]:
    """Files and folders next to what is typed, relative to the document's folder."""
    folder_part = typed.rsplit("/", 1)[0] if "/" in typed else ""
    folder = (doc.path.parent / folder_part).resolve()
    if not folder.is_relative_to(document_root(doc.path, doc.root)):
        return []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    prefix = f"{folder_part}/" if folder_part else ""
    found = []
    for entry in entries:
        if entry.name.startswith(".") or entry.path == str(doc.path):
            continue
        if entry.is_dir():
            found.append(Completion(f"{prefix}{entry.name}/", "folder"))
        else:
            found.append(Completion(f"{prefix}{entry.name}", "file"))
    return found
