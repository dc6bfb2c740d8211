"""Sessions of the older domarkx format that a run cannot use as they are, and ``migrate``.

The older format built its model in the setup script (``client =
SomeChatCompletionClient(model=..., base_url=..., api_key=...)``) and wrote some
tool results under ``## unknow``. ``migrate_text`` rewrites exactly those
parts: the client becomes ``session-config.model`` (provider, name, base_url,
and ``api_key_env`` when the key came from a variable; never a key), its
statement (and an import used only by it) leaves the setup script, and
``## unknow`` headings become ``## tool``; autogen ``FunctionTool(f)``
declarations become ``f`` (``legacy_tools``). Every other byte stays; what
cannot be converted is named by ``problems_of``.

Lines are found with the parser's own block reader (``blocks``), so a heading
or a fence inside a code block is never touched.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domarkx.errors import DocumentError
from domarkx.parsing.blocks import FencedCode, Heading, blocks
from domarkx.parsing.data import load_yaml
from domarkx.parsing.fences import parse_info, write_fence
from domarkx.parsing.source import split_front_matter
from domarkx.session import legacy_tools

LEGACY_ROLE = "unknow"
PROVIDER = "openai"  # every client of the older format spoke chat completions


@dataclass
class Client:
    """A ``client = X(...)`` statement of a setup script (lines 1-based in the script)."""

    first: int
    last: int
    model: dict[str, str]
    drop: list[tuple[int, int]] = field(default_factory=list)  # statements to remove


@dataclass
class Layout:
    """Where the parts ``migrate`` touches sit in a document (0-based line indexes)."""

    config: tuple[int, int, str] | None = None  # fence start, fence end, language
    setup: tuple[int, int, str] | None = None
    legacy_headings: list[int] = field(default_factory=list)
    conversation: int | None = None  # the `## Conversation` heading of old templates


def find_client(code: str) -> Client | None:
    """The module-level ``client = Call(model=...)`` of a Python setup script, if any."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "client" for t in node.targets)
            and isinstance(node.value, ast.Call)
        ):
            continue
        keywords = {k.arg: k.value for k in node.value.keywords if k.arg}
        if "model" not in keywords:
            continue
        model: dict[str, str] = {"provider": PROVIDER}
        for key, target in (("model", "name"), ("base_url", "base_url")):
            value = keywords.get(key)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                model[target] = value.value
        variable = _key_variable(keywords.get("api_key"))
        if variable:
            model["api_key_env"] = variable
        end = node.end_lineno or node.lineno
        client = Client(first=node.lineno, last=end, model=model, drop=[(node.lineno, end)])
        # The client's class and the modules its arguments read (`os` of
        # `os.getenv("KEY")`): an import whose name nothing else uses goes with it.
        used_here = Counter(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        for name, count in sorted(used_here.items()):
            client.drop += _imports_only_of(tree, name, count)
        return client
    return None


def _key_variable(value: ast.expr | None) -> str | None:
    """``X`` of ``os.getenv("X")``, ``os.environ.get("X")`` or ``os.environ["X"]``."""
    if isinstance(value, ast.Call) and value.args:
        first = value.args[0]
        name = ast.unparse(value.func)
        if name in ("os.getenv", "os.environ.get", "getenv") and isinstance(first, ast.Constant):
            return str(first.value)
    if isinstance(value, ast.Subscript) and ast.unparse(value.value) == "os.environ":
        key = value.slice
        if isinstance(key, ast.Constant):
            return str(key.value)
    return None


def _imports_only_of(tree: ast.Module, name: str, uses: int) -> list[tuple[int, int]]:
    """Import statements that bring in ``name`` and nothing else, when the client's
    statement holds all ``uses`` of it in the script."""
    if sum(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree)) != uses:
        return []
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import) and [
            a.asname or a.name.split(".")[0] for a in node.names
        ] == [name]:
            found.append((node.lineno, node.end_lineno or node.lineno))
    return found


def layout_of(text: str) -> Layout:
    """The session-config and setup-script fences and the ``## unknow`` headings of a document."""
    _, lines, _ = split_front_matter(text, "<document>")
    layout = Layout()
    seen_role = False
    for block in blocks(lines):
        if isinstance(block, Heading):
            seen_role = True
            if block.text.strip().lower() == LEGACY_ROLE:
                layout.legacy_headings.append(block.start)
            elif block.text.strip().lower() == "conversation" and layout.conversation is None:
                layout.conversation = block.start
        elif isinstance(block, FencedCode) and not seen_role:
            info = parse_info(block.info)
            place = (block.start, block.end, info.language)
            if info.special == "session-config" and layout.config is None:
                layout.config = place
            elif info.special == "setup-script" and layout.setup is None:
                layout.setup = place
    return layout


def config_key_line(text: str, key: str) -> int | None:
    """The 1-based line of ``key`` in the session-config block (the block's line without it)."""
    layout = layout_of(text)
    if layout.config is None:
        return None
    start, end, _ = layout.config
    lines = text.split("\n")
    # ``key:`` at the start of a line, or inside a flow mapping (``model: {endpoint: x}``).
    pattern = re.compile(rf"(^|[\s{{,])[\"']?{re.escape(key)}[\"']?\s*:")
    for index in range(start + 1, min(end, len(lines))):
        if pattern.search(lines[index]):
            return index + 1
    return start + 1


def client_line(text: str) -> int | None:
    """The 1-based document line of the setup script's ``client = ...`` statement."""
    layout = layout_of(text)
    if layout.setup is None:
        return None
    start, end, _ = layout.setup
    code = "\n".join(text.split("\n")[start + 1 : end - 1])
    client = find_client(code)
    return start + 1 + client.first if client else None


def read_source(root: Path, source_file: str) -> str | None:
    """The session document's text, for pointing at a line (None when it cannot be read)."""
    try:
        return (Path(root) / source_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def check_model_source(
    setup_language: str | None, setup_code: str | None, source: str | None, source_file: str
) -> None:
    """Refuse a session whose model is the older format's setup-script ``client``.

    Called when a run would ask a model and ``session-config`` names none.
    """
    if setup_code is None or (setup_language or "").lower() not in ("python", "python3", "py"):
        return
    if find_client(setup_code) is None:
        return
    raise DocumentError(
        "the setup script builds a model `client` (the older domarkx format); a run reads "
        "the model from session-config",
        file=source_file,
        line=client_line(source) if source is not None else None,
        hint=f"run `domarkx migrate {source_file}` to move it into session-config.model",
    )


def _python_setup(layout: Layout) -> tuple[int, int, str] | None:
    if layout.setup is not None and layout.setup[2].lower() in ("python", "python3", "py"):
        return layout.setup
    return None


def problems_of(text: str) -> list[tuple[int, str]]:
    """What ``migrate_text`` cannot convert: (1-based document line, what), one each."""
    setup = _python_setup(layout_of(text))
    if setup is None:
        return []
    start, end, _ = setup
    code = "\n".join(text.split("\n")[start + 1 : end - 1])
    found = [(start + 1 + p.line, p.what) for p in legacy_tools.convert(code)[1]]
    client = find_client(code)
    if client is not None and "name" not in client.model:
        found.append(
            (
                start + 1 + client.first,
                "the client's `model` is not a string written in the script; write "
                "session-config.model by hand",
            )
        )
    return found


def _with_function_tools(text: str) -> str:
    """``text`` with its setup script's ``FunctionTool(f)`` declarations made plain ``f``."""
    setup = _python_setup(layout_of(text))
    if setup is None:
        return text
    start, end, _ = setup
    lines = text.split("\n")
    code = "\n".join(lines[start + 1 : end - 1])
    converted, problems = legacy_tools.convert(code)
    if problems or converted == code:
        return text
    return "\n".join([*lines[: start + 1], converted, *lines[end - 1 :]])


def migrate_text(text: str) -> str:
    """The document with the older format's client and ``## unknow`` headings rewritten.

    Call ``problems_of`` first: what it names is left as it was."""
    if "\r\n" in text:
        return migrate_text(text.replace("\r\n", "\n")).replace("\n", "\r\n")
    text = _with_function_tools(text)
    lines = text.split("\n")
    layout = layout_of(text)
    edits: dict[int, list[str] | None] = {}  # line index -> replacement lines (None: delete)

    for index in layout.legacy_headings:
        edits[index] = [re.sub(r"(?i)\bunknow\b", "tool", lines[index], count=1)]
    if layout.conversation is not None:
        edits.update(conversation_edits(lines, layout.conversation))

    client = None
    if layout.setup is not None and layout.setup[2].lower() in ("python", "python3", "py"):
        start, end, _ = layout.setup
        client = find_client("\n".join(lines[start + 1 : end - 1]))
    if client is None:
        return "\n".join(_apply(lines, edits))
    assert layout.setup is not None
    start, end, _ = layout.setup
    for first, last in client.drop:
        for index in range(start + first, start + last + 1):
            edits[index] = None
    if all(i in edits or not lines[i].strip() for i in range(start + 1, end - 1)):
        # Nothing but the client was in it: the whole setup script goes.
        for index in range(start, end):
            edits[index] = None
        if end < len(lines) and not lines[end].strip():
            edits[end] = None
    if layout.config is None:
        config = write_fence(f"model: {json.dumps(client.model)}", "yaml session-config")
        block = [*config.split("\n"), ""]
        edits[start] = block + (edits.get(start, [lines[start]]) or [])
    else:
        c_start, c_end, language = layout.config
        body = "\n".join(lines[c_start + 1 : c_end - 1])
        new_body = _body_with_model(body, language, client.model)
        if new_body is not None:
            for index in range(c_start + 1, c_end - 1):
                edits[index] = None
            edits[c_end - 1] = [*new_body.split("\n"), lines[c_end - 1]]
    return "\n".join(_apply(lines, edits))


def _apply(lines: list[str], edits: dict[int, list[str] | None]) -> list[str]:
    out: list[str] = []
    for index, line in enumerate(lines):
        if index in edits:
            out.extend(edits[index] or [])
        else:
            out.append(line)
    return out


def _body_with_model(body: str, language: str, model: dict[str, Any]) -> str | None:
    """The session-config text with ``model`` added (None: it has one, or cannot be read)."""
    try:
        if language == "json":
            data = json.loads(body) if body.strip() else {}
        else:
            data = (
                load_yaml(body, file="<session-config>", first_line=1, what="session-config") or {}
            )
    except Exception:
        return None
    if not isinstance(data, dict) or "model" in data:
        return None
    if language != "json":
        return (body + "\n" if body.strip() else "") + f"model: {json.dumps(model)}"
    item = f'"model": {json.dumps(model)}'
    if not body.strip():
        return "{\n  " + item + "\n}"
    # Before the object's closing brace, indented like its first member.
    brace = body.rindex("}")
    before = body[:brace].rstrip()
    gap = body[len(before) : brace]
    found = re.search(r"\n([ \t]+)\S", body)
    indent = found.group(1) if found else "  "
    if before.endswith("{"):
        return before + "\n" + indent + item + "\n" + body[brace:]
    if "\n" not in gap:
        return before + ", " + item + gap + body[brace:]
    return before + ",\n" + indent + item + gap + body[brace:]


# `**User**: text` lines of the older templates' `## Conversation` section.
SPEAKER = re.compile(r"^\*\*(user|assistant|system|tool)\*\*\s*:\s?(.*)$", re.IGNORECASE)
# Older placeholders: `{name}` and `[@name]()`, both a parameter.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\[@([A-Za-z_][A-Za-z0-9_]*)\]\(\)")


def conversation_edits(lines: list[str], heading: int) -> dict[int, list[str] | None]:
    """The `## Conversation` section as messages: each `**Role**: text` line starts a
    `## role` message whose text (and the lines after it) is quoted; `{name}` and
    `[@name]()` become parameter macros. The heading goes."""
    edits: dict[int, list[str] | None] = {heading: None}
    index = heading + 1
    while index < len(lines) and not lines[index].startswith("#"):
        line = lines[index]
        found = SPEAKER.match(line)
        text = PLACEHOLDER.sub(
            lambda m: f"[@{m.group(1) or m.group(2)}](domarkx://{m.group(1) or m.group(2)})",
            found.group(2) if found else line,
        )
        if found:
            edits[index] = [f"## {found.group(1).lower()}", "", f"> {text}".rstrip()]
        elif index == heading + 1 and not line.strip():
            edits[index] = None
        elif any(k < index and v and v[0].startswith("## ") for k, v in edits.items() if v):
            edits[index] = [f"> {text}".rstrip() if line.strip() else ">"]
        index += 1
    while edits.get(index - 1) == [">"]:  # trailing blank lines stay blank
        edits[index - 1] = [""]
        index -= 1
    return edits


def changes_of(text: str) -> list[str]:
    """What ``migrate_text`` changes in ``text``, one phrase each (empty: nothing)."""
    layout = layout_of(text)
    found = []
    if layout.legacy_headings:
        count = len(layout.legacy_headings)
        found.append(f"{count} `## unknow` heading{'s' * (count > 1)} -> `## tool`")
    if layout.setup is not None and layout.setup[2].lower() in ("python", "python3", "py"):
        start, end, _ = layout.setup
        if find_client("\n".join(text.split("\n")[start + 1 : end - 1])) is not None:
            found.append("the setup script's model `client` -> session-config `model`")
    setup = _python_setup(layout)
    if setup is not None:
        code = "\n".join(text.split("\n")[setup[0] + 1 : setup[1] - 1])
        converted, _ = legacy_tools.convert(code)
        if converted != code:
            count = code.count(legacy_tools.WRAPPER + "(")
            found.append(f"`FunctionTool(f)` -> `f` ({count} tool{'s' * (count != 1)})")
    if layout.conversation is not None:
        lines = text.split("\n")
        count = sum(
            1
            for line in lines[layout.conversation + 1 :]
            if SPEAKER.match(line) and not line.startswith("#")
        )
        found.append(f"`## Conversation` -> {count} message{'s' * (count != 1)} (`## role`)")
    return found
