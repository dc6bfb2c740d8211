"""Session documents (Markdown) to a ``ParsedSession``, with a line for every piece.

mistletoe's block structure decides where headings, fences, quotes, indented
code and setext headings start; span parsing is switched off because the
parser only needs blocks, and inline parsing is most of mistletoe's cost. A
replay of mistletoe's top-level tokenizer (``_replay_marks``) finds the same
structure without importing mistletoe for the documents it covers (nearly all
sessions), and mistletoe itself parses the others. Text is then sliced from
the source lines, so it is kept byte for byte and a round trip through export
changes nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from domarkx.data.models import (
    CodeBlock,
    ExecutionConfig,
    Message,
    OutputBlock,
    ScriptBlock,
    TextBlock,
)
from domarkx.errors import DocumentError
from domarkx.parsing import fences
from domarkx.parsing.fences import InfoString, parse_info

ROLE_ALIASES = {
    "system": "system",
    "system_message": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_QUOTE_MARKER = re.compile(r"^ {0,3}> ?")


class ParsedSession(BaseModel):
    """A document's structure before macro expansion; ``*_line`` fields are 1-based."""

    source_file: str = Field(description="The path shown in messages (relative when possible).")
    source_path: str = Field(description="Absolute path; includes resolve against its folder.")
    front_matter: dict[str, Any] = Field(default_factory=dict)
    execution_config: dict[str, Any] | None = None
    config_format: str = "yaml"
    config_line: int | None = None
    setup_script: ScriptBlock | None = None
    preamble: str | None = None
    preamble_line: int | None = None
    messages: list[Message] = Field(default_factory=list)
    message_lines: list[int] = Field(default_factory=list)
    block_lines: list[list[int]] = Field(
        default_factory=list, description="For each message, the line of each content block."
    )


@dataclass
class _Segment:
    """A top-level piece of the document: a role heading, a fence, or text."""

    kind: str  # "heading", "fence", "text"
    start: int  # 0-based index of the first line
    end: int  # 0-based index one past the last line
    role: str = ""
    info: str = ""
    code: str = ""
    quoted: bool = False


_mistletoe_lock = threading.Lock()


def _block_tokens(lines: list[str]) -> list[Any]:
    """Top-level mistletoe block tokens of ``lines``, without inline parsing."""
    from mistletoe import block_token, span_token

    # Lines go in split on "\n" only: given a string, mistletoe splits it with
    # str.splitlines, which also breaks at form feeds, U+2028 and the like, and
    # its line numbers would no longer match ours.
    with _mistletoe_lock:
        saved = span_token._token_types
        span_token._token_types = [span_token.RawText]
        try:
            # The "" after a final "\n" is not a line.
            real = lines[:-1] if lines and lines[-1] == "" else lines
            return list(block_token.Document([line + "\n" for line in real]).children or [])
        finally:
            span_token._token_types = saved


def _mistletoe_marks(lines: list[str]) -> list[tuple[int, str, Any]]:
    """``(0-based start, kind, data)`` of each top-level block, as mistletoe finds them.

    kind is "heading" (a level-2 heading; data: its text, whether it is a
    setext heading), "fence" (data: info string, code), "quote" or "text".
    """
    from mistletoe import block_token

    marks: list[tuple[int, str, Any]] = []
    for token in _block_tokens(lines):
        start = token.line_number - 1
        if isinstance(token, block_token.Heading | block_token.SetextHeading) and token.level == 2:
            setext = isinstance(token, block_token.SetextHeading)
            marks.append((start, "heading", (_heading_text(token), setext)))
        elif isinstance(token, block_token.CodeFence):
            code = token.children[0].content if token.children else ""
            marks.append((start, "fence", ((token.info_string or "").strip(" \t"), code)))
        else:
            kind = "quote" if isinstance(token, block_token.Quote) else "text"
            marks.append((start, kind, None))
    return marks


def _block_marks(lines: list[str]) -> list[tuple[int, str, Any]]:
    """What ``_mistletoe_marks`` returns, without mistletoe whenever the replay covers it."""
    if _mistletoe_customised():
        return _mistletoe_marks(lines)
    real = lines[:-1] if lines and lines[-1] == "" else lines
    try:
        return _replay_marks([line + "\n" for line in real])
    except _Unsure:
        return _mistletoe_marks(lines)


def _mistletoe_customised() -> bool:
    """Whether this process changed mistletoe's block types (a renderer adds HTML blocks)."""
    module = sys.modules.get("mistletoe.block_token")
    if module is None:
        return False
    names = [token.__name__ for token in module._token_types]
    return names != _MISTLETOE_BLOCKS or not module.Table.interrupt_paragraph


# The block structure without mistletoe -------------------------------------------------
#
# Importing mistletoe costs ~0.25 s and tokenizing a 5 KB session ~1.3 ms, while
# a session needs only where its top-level blocks start. The functions below
# replay the top level of mistletoe's own block tokenizer (mistletoe 1.x, its
# default block types, in its order, with its regular expressions and quirks,
# which are not always CommonMark's), so the result is the one mistletoe gives.
# What they do not replay (indented code at the top level, link reference
# definitions, a mistletoe with other block types registered) raises
# ``_Unsure``, and mistletoe parses that document.
_HEADING = re.compile(r" {0,3}(#{1,6})(?:\n|\s+?(.*?)(\n|\s+?#+\s*?$))")
_THEMATIC_BREAK = re.compile(r" {0,3}(?:([-_*])\s*?)(?:\1\s*?){2,}$")
_LIST = re.compile(r" {0,3}(?:\d{0,9}[.)]|[+\-*])(?:[ \t]*$|[ \t]+)")
_LIST_MARKER = re.compile(r"( {0,3})(\d{0,9}[.)]|[+\-*])($|\s+)")
_LIST_CONTINUATION = re.compile(r"([ \t]*)(\S.*\n|\n)")
_TABLE_DELIMITER = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=|-)+ *$")
_MISTLETOE_BLOCKS = [
    "BlockCode",
    "Heading",
    "Quote",
    "CodeFence",
    "ThematicBreak",
    "List",
    "Table",
    "Footnote",
    "Paragraph",
]


class _Unsure(Exception):
    """The replay does not cover this document: ask mistletoe."""


def _heading(line: str) -> tuple[int, str] | None:
    match = _HEADING.match(line)
    if match is None:
        return None
    content = (match.group(2) or "").strip()
    if set(content) == {"#"}:
        content = ""
    return len(match.group(1)), content


def _fence(line: str) -> fences.Fence | None:
    return fences.open_fence(line[:-1] if line.endswith("\n") else line)


def _is_quote(line: str) -> bool:
    stripped = line.lstrip(" ")
    return len(line) - len(stripped) <= 3 and stripped.startswith(">")


def _is_block_code(line: str) -> bool:
    return line.replace("\t", "    ", 1).startswith("    ")


def _list_marker(line: str) -> tuple[int, int, str, str] | None:
    match = _LIST_MARKER.match(line)
    if match is None:
        return None
    prepend = len(match.group(0).expandtabs(4))
    leader = match.group(2)
    content = line[match.end(0) :]
    spaces = prepend - match.end(2)
    if spaces > 4:
        prepend -= spaces - 1
        content = " " * (spaces - 1) + content
    return len(match.group(1)), prepend, leader, content


def _list_interrupts(line: str) -> bool:
    marker = _list_marker(line)
    if marker is not None and marker[3].strip() != "":
        leader = marker[2]
        return not leader[0].isdigit() or leader in ("1.", "1)")
    return False


def _table_interrupts(lines: list[str], index: int) -> bool:
    return (
        "|" in lines[index]
        and index + 1 < len(lines)
        and _TABLE_DELIMITER.fullmatch(lines[index + 1]) is not None
    )


def _leading_tabs(text: str) -> str:
    """mistletoe's ``Quote.convert_leading_tabs``."""
    text = text.replace(">\t", "   ", 1)
    count = 0
    position = 0
    while True:
        char = text[position]
        if char == "\t":
            count += 4
        elif char == " ":
            count += 1
        else:
            break
        if position == len(text) - 1:
            break
        position += 1
    if position == 0:
        return text
    return ">" + " " * count + text[position:]


def _quote_end(lines: list[str], index: int) -> int:
    first = _leading_tabs(lines[index].lstrip()).split(">", 1)[1]
    if first and first[0] == " ":
        first = first[1:]
    in_fence = _fence(first) is not None
    in_code = _is_block_code(first)
    blank = first.strip() == ""
    index += 1
    while index < len(lines):
        line = lines[index]
        if (
            line.strip() == ""
            or _heading(line)
            or _fence(line)
            or _THEMATIC_BREAK.match(line)
            or _list_interrupts(line)
            or _table_interrupts(lines, index)
        ):
            break
        stripped = _leading_tabs(line.lstrip())
        if stripped[0] == ">":
            stripped = stripped[2:] if stripped[1] == " " else stripped[1:]
            in_fence = _fence(stripped) is not None
            in_code = _is_block_code(stripped)
            blank = stripped.strip() == ""
        elif in_fence or in_code or blank:
            break
        index += 1
    return index


def _list_item(lines: list[str], index: int, marker: Any) -> tuple[int, Any, str]:
    """(index of the item's last line, the next item's marker or None, the item's leader)."""
    last = index
    indentation, prepend, leader, content = marker or _list_marker(lines[index])
    following = lines[last + 1] if last + 1 < len(lines) else None
    if content.strip() == "":
        prepend = indentation + len(leader) + 1
        blanks = 1
        while following is not None and following.strip() == "":
            blanks += 1
            last += 1
            following = lines[last + 1] if last + 1 < len(lines) else None
        if blanks > 1:
            return last, _list_marker(following) if following is not None else None, leader
    newlines = 0
    next_marker = None
    while True:
        if following is None:
            if newlines:
                last -= 1
            break
        continuation = _continuation(following, prepend)
        if not continuation:
            if (
                _heading(following)
                or _is_quote(following)
                or _fence(following)
                or _THEMATIC_BREAK.match(following)
                or _table_interrupts(lines, last + 1)
            ):
                if newlines:
                    last -= 1
                break
            next_marker = _list_marker(following)
            if next_marker is not None:
                break
            if newlines:
                last -= 1
                break
            continuation = following
        newlines = newlines + 1 if continuation == "\n" else 0
        last += 1
        following = lines[last + 1] if last + 1 < len(lines) else None
    return last, next_marker, leader


def _continuation(line: str, prepend: int) -> str | None:
    match = _LIST_CONTINUATION.match(line)
    if match is None:
        return None
    if match.group(2) == "\n":
        return "\n"
    spaces = match.group(1).expandtabs(4)
    return spaces[prepend:] + match.group(2) if len(spaces) >= prepend else None


def _same_marker_type(leader: str, other: str) -> bool:
    if len(leader) == 1:
        return leader == other
    return leader[:-1].isdigit() and other[:-1].isdigit() and leader[-1] == other[-1]


def _list_end(lines: list[str], index: int) -> int:
    leader = None
    marker = None
    while True:
        last, next_marker, item_leader = _list_item(lines, index, marker)
        if leader is None:
            leader = item_leader
        elif not _same_marker_type(leader, item_leader):
            return index
        marker = next_marker
        if marker is None:
            return last + 1
        index = last + 1


def _may_define_link(lines: list[str], index: int) -> bool:
    """Whether mistletoe could read a link reference definition here (it then drops lines)."""
    end = index
    while end < len(lines) and lines[end].strip() != "":
        end += 1
    text = "".join(lines[index:end])
    start = -1
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            if start != -1:
                return False
            start = i
        elif char == "]":
            if text[start + 1 : i].strip() == "":
                return False
            return i + 1 < len(text) and text[i + 1] == ":"
        if start == -1 and not (char == " " and i < 3):
            return False
    return False


def _paragraph_end(lines: list[str], index: int) -> tuple[int, bool]:
    """(index past the paragraph, whether a setext underline ended it)."""
    index += 1
    while index < len(lines) and lines[index].strip() != "":
        line = lines[index]
        # A line that starts with a letter can only start a table (most prose lines).
        if line[0].isalpha() and "|" not in line:
            index += 1
            continue
        if (
            _heading(line)
            or _is_quote(line)
            or _fence(line)
            or _list_interrupts(line)
            or _table_interrupts(lines, index)
        ):
            return index, False
        if _SETEXT_UNDERLINE.match(line):
            return index + 1, True
        if _THEMATIC_BREAK.match(line):
            return index, False
        index += 1
    return index, False


def _paragraph_mark(lines: list[str], start: int, end: int, setext: bool) -> tuple[int, str, Any]:
    if not setext:
        return start, "text", None
    text = "\n".join(part.strip() for part in lines[start : end - 1]).strip()
    return start, "text" if lines[end - 1].rstrip().endswith("=") else "heading", (text, True)


def _replay_marks(lines: list[str]) -> list[tuple[int, str, Any]]:
    """What ``_mistletoe_marks`` returns, found without mistletoe; raises ``_Unsure``."""
    marks: list[tuple[int, str, Any]] = []
    count = len(lines)
    index = 0
    while index < count:
        line = lines[index]
        if line == "\n":  # an empty line starts no block
            index += 1
            continue
        if line[0].isalpha() and "|" not in line:
            end, setext = _paragraph_end(lines, index)
            marks.append(_paragraph_mark(lines, index, end, setext))
            index = end
            continue
        if _is_block_code(line):
            raise _Unsure
        heading = _heading(line)
        if heading is not None:
            level, content = heading
            kind = "heading" if level == 2 else "text"
            marks.append((index, kind, (content, False)))
            index += 1
            continue
        if _is_quote(line):
            marks.append((index, "quote", None))
            index = _quote_end(lines, index)
            continue
        fence = _fence(line)
        if fence is not None:
            indent, leader = fence.indent, fence.char * fence.size
            code = []
            start = index
            index += 1
            while index < count:
                stripped = lines[index].lstrip(" ")
                diff = len(lines[index]) - len(stripped)
                index += 1
                if (
                    stripped.startswith(leader)
                    and len(stripped.split(maxsplit=1)) == 1
                    and diff < 4
                ):
                    break
                if diff > indent:
                    stripped = " " * (diff - indent) + stripped
                code.append(stripped)
            marks.append((start, "fence", (fence.info, "".join(code))))
            continue
        if _THEMATIC_BREAK.match(line):
            marks.append((index, "text", None))
            index += 1
            continue
        if _LIST.match(line):
            marks.append((index, "text", None))
            index = _list_end(lines, index)
            continue
        if _table_interrupts(lines, index):
            marks.append((index, "text", None))
            index += 2
            while index < count and "|" in lines[index]:
                index += 1
            continue
        if line.lstrip().startswith("[") and _may_define_link(lines, index):
            raise _Unsure
        if line.strip() != "":
            end, setext = _paragraph_end(lines, index)
            marks.append(_paragraph_mark(lines, index, end, setext))
            index = end
            continue
        index += 1
    return marks


def _heading_text(token: Any) -> str:
    return "".join(getattr(child, "content", "") for child in token.children or []).strip()


def _segments(lines: list[str]) -> list[_Segment]:
    """Split the document into role headings, fences and text runs, by source line."""
    marks = _block_marks(lines)
    segments: list[_Segment] = []
    # mistletoe keeps link reference definitions (`[a]: https://...`) out of the
    # token list; lines before the first token still belong to the document.
    first = marks[0][0] if marks else len(lines)
    if first > 0:
        segments.append(_Segment("text", 0, first))
    for index, (start, kind, data) in enumerate(marks):
        end = marks[index + 1][0] if index + 1 < len(marks) else len(lines)
        if kind == "heading":
            role, setext = data
            heading_end = start + 1
            if setext:
                # The underline sits below however many lines the heading text took.
                heading_end = start + len(role.splitlines()) + 1
            segments.append(_Segment("heading", start, heading_end, role=role))
            if heading_end < end:
                segments.append(_Segment("text", heading_end, end))
        elif kind == "fence":
            info, code = data
            fence_end = max(min(fences.fence_end(lines, start), end), start + 1)
            segments.append(_Segment("fence", start, fence_end, info=info, code=code))
            if fence_end < end:
                segments.append(_Segment("text", fence_end, end))
        else:
            segments.append(_Segment("text", start, end, quoted=kind == "quote"))
    return _merge_text(segments, lines)


def _merge_text(segments: list[_Segment], lines: list[str]) -> list[_Segment]:
    """Join neighbouring text runs of the same kind; drop runs that are only blank."""
    merged: list[_Segment] = []
    for segment in segments:
        if segment.kind == "text":
            if not any(line.strip() for line in lines[segment.start : segment.end]):
                continue
            previous = merged[-1] if merged else None
            if previous and previous.kind == "text" and previous.quoted == segment.quoted:
                previous.end = segment.end
                continue
        merged.append(segment)
    return merged


def _text_value(lines: list[str], segment: _Segment) -> str:
    chunk = lines[segment.start : segment.end]
    if segment.quoted:
        chunk = [_QUOTE_MARKER.sub("", line, count=1) for line in chunk]
    while chunk and not chunk[-1].strip():
        chunk.pop()
    while chunk and not chunk[0].strip():
        chunk.pop(0)
    return "\n".join(chunk)


def first_text_line(lines: list[str], segment: _Segment) -> int:
    for index in range(segment.start, segment.end):
        if lines[index].strip():
            return index + 1
    return segment.start + 1


def _json_ready(value: Any) -> Any:
    """YAML values as JSON can hold them (dates become ISO strings, keys strings)."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def load_yaml(text: str, *, file: str, first_line: int, what: str) -> Any:
    """Load YAML with the C loader when present; errors name the document's line."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return _json_ready(yaml.load(text, Loader=loader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = first_line + (mark.line if mark else 0)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DocumentError(
            f"invalid YAML in {what}: {problem}",
            file=file,
            line=line,
            hint=f"fix the YAML syntax of the {what}",
        ) from None


def load_json(text: str, *, file: str, first_line: int, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DocumentError(
            f"invalid JSON in {what}: {err.msg} (column {err.colno})",
            file=file,
            line=first_line + err.lineno - 1,
            hint=f"fix the JSON syntax of the {what}",
        ) from None


def decode_document(data: bytes, file: str) -> str:
    """UTF-8 text with ``\\n`` line endings; a clear error names the first bad byte's line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DocumentError(
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
            file=file,
            line=line,
            hint="save the document as UTF-8",
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(text: str, file: str) -> tuple[dict[str, Any], list[str], int]:
    """Front matter mapping, the document's lines (front matter blanked), its last line."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, lines, 0
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            body = "\n".join(lines[1:index])
            data = load_yaml(body, file=file, first_line=2, what="front matter")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise DocumentError(
                    f"front matter must be a YAML mapping, not {type(data).__name__}",
                    file=file,
                    line=2,
                    hint="write `key: value` lines between the two `---` lines",
                )
            blanked = [""] * (index + 1) + lines[index + 1 :]
            return data, blanked, index + 1
    raise DocumentError(
        "front matter is not closed",
        file=file,
        line=1,
        hint="end the front matter with a line `---`",
    )


class MarkdownParser:
    """Parses a session document into a ``ParsedSession`` (spec section 1)."""

    def parse_file(self, path: Path, display: str | None = None) -> ParsedSession:
        display = display or str(path)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise DocumentError(
                "no such file", file=display, hint="check the path of the session document"
            ) from None
        except IsADirectoryError:
            raise DocumentError("is a folder, not a session document", file=display) from None
        except OSError as err:
            raise DocumentError(f"cannot read: {err.strerror}", file=display) from None
        return self.parse_text(decode_document(data, display), display, Path(path).resolve())

    def parse_text(self, text: str, display: str, path: Path | None = None) -> ParsedSession:
        front_matter, lines, _ = split_front_matter(text, display)
        parsed = ParsedSession(
            source_file=display,
            source_path=str(path or Path(display).resolve()),
            front_matter=front_matter,
        )
        segments = _segments(lines)
        first_role = next((i for i, s in enumerate(segments) if s.kind == "heading"), len(segments))
        self._document_blocks(parsed, lines, segments[:first_role])
        self._messages(parsed, lines, segments[first_role:])
        return parsed

    def _document_blocks(
        self, parsed: ParsedSession, lines: list[str], segments: list[_Segment]
    ) -> None:
        file = parsed.source_file
        preamble: list[str] = []
        for segment in segments:
            line = segment.start + 1
            if segment.kind == "fence":
                info = parse_info(segment.info)
                if info.special == "session-config":
                    if parsed.execution_config is not None:
                        raise DocumentError(
                            "a second session-config block",
                            file=file,
                            line=line,
                            hint=f"merge it into the one at line {parsed.config_line}",
                        )
                    parsed.execution_config = self._config(info, segment.code, file, line)
                    parsed.config_format = "json" if info.language == "json" else "yaml"
                    parsed.config_line = line
                    continue
                if info.special == "setup-script":
                    if parsed.setup_script is not None:
                        raise DocumentError(
                            "a second setup-script block",
                            file=file,
                            line=line,
                            hint="a session has one setup script; merge the two",
                        )
                    parsed.setup_script = ScriptBlock(
                        language=info.language, code=_strip_final_newline(segment.code)
                    )
                    continue
            if parsed.preamble_line is None:
                parsed.preamble_line = first_text_line(lines, segment)
            preamble.append(_raw(lines, segment))
        if preamble:
            parsed.preamble = "\n\n".join(preamble)

    def _config(self, info: InfoString, code: str, file: str, line: int) -> dict[str, Any]:
        what = "session-config"
        if info.language == "json":
            data = load_json(code, file=file, first_line=line + 1, what=what)
        else:
            data = load_yaml(code, file=file, first_line=line + 1, what=what)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DocumentError(
                "session-config must be a mapping",
                file=file,
                line=line,
                hint="write `key: value` settings, e.g. `engine: local_shell`",
            )
        try:
            ExecutionConfig.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DocumentError(
                f"session-config: {where}: {first['msg']}",
                file=file,
                line=line,
                hint="see the session-config keys in docs/session-format.md",
            ) from None
        return data

    def _messages(self, parsed: ParsedSession, lines: list[str], segments: list[_Segment]) -> None:
        message: Message | None = None
        block_lines: list[int] = []
        for segment in segments:
            line = segment.start + 1
            if segment.kind == "heading":
                message = Message(role=self._role(segment.role, parsed.source_file, line))
                block_lines = []
                parsed.messages.append(message)
                parsed.message_lines.append(line)
                parsed.block_lines.append(block_lines)
                continue
            assert message is not None
            if segment.kind == "text":
                value = _text_value(lines, segment)
                message.content.append(TextBlock(value=value, quoted=segment.quoted))
                block_lines.append(first_text_line(lines, segment))
                continue
            self._fence_block(parsed, message, block_lines, segment, line)

    def _fence_block(
        self,
        parsed: ParsedSession,
        message: Message,
        block_lines: list[int],
        segment: _Segment,
        line: int,
    ) -> None:
        file = parsed.source_file
        info = parse_info(segment.info)
        special = info.special
        code = _strip_final_newline(segment.code)
        if special in ("session-config", "setup-script"):
            raise DocumentError(
                f"a {special} block inside a message",
                file=file,
                line=line,
                hint=f"move the {special} block above the first `## role` heading",
            )
        if special == "msg-metadata":
            if message.message_metadata is not None:
                raise DocumentError(
                    "a second msg-metadata block in one message",
                    file=file,
                    line=line,
                    hint="merge the two into one block",
                )
            loader = load_json if info.language == "json" else load_yaml
            data = loader(segment.code, file=file, first_line=line + 1, what="msg-metadata")
            if data is None:  # an empty YAML block, as for session-config
                data = {}
            if not isinstance(data, dict):
                raise DocumentError(
                    "msg-metadata must be a mapping",
                    file=file,
                    line=line,
                    hint="write a JSON object or a YAML mapping",
                )
            message.message_metadata = data
            return
        if special == "output":
            previous = message.content[-1] if message.content else None
            if not isinstance(previous, CodeBlock | OutputBlock):
                raise DocumentError(
                    "an output block that follows no code block",
                    file=file,
                    line=line,
                    hint="put output blocks right after the code block that printed them",
                )
            message.content.append(_output_block(info, code, file, line))
            block_lines.append(line)
            return
        message.content.append(
            CodeBlock(
                language=info.language,
                name=info.name,
                code=code,
                attrs=info.attrs,
                flags=info.flags,
            )
        )
        block_lines.append(line)

    def _role(self, heading: str, file: str, line: int) -> str:
        role = ROLE_ALIASES.get(heading.strip().lower())
        if role is None and heading.strip().lower() == "unknow":
            raise DocumentError(
                f"`## {heading}` is the older domarkx format's heading for tool results",
                file=file,
                line=line,
                hint=f"run `domarkx migrate {file}` (it becomes `## tool`)",
            )
        if role is None:
            raise DocumentError(
                f"unknown role heading `## {heading}`",
                file=file,
                line=line,
                hint="valid roles: system (or system_message), user, assistant, tool; "
                "use `###` for a sub-heading (and a blank line before a `---` rule)",
            )
        return role


def _output_block(info: InfoString, code: str, file: str, line: int) -> OutputBlock:
    attrs = {"name": info.name, **info.attrs} if info.name is not None else dict(info.attrs)
    exit_code: int | None = None
    if "exit_code" in attrs:
        raw = attrs.pop("exit_code")
        try:
            exit_code = int(raw)
        except ValueError:
            raise DocumentError(
                f"exit_code={raw!r} is not a whole number",
                file=file,
                line=line,
                hint="write e.g. `text output exit_code=0`",
            ) from None
    stream = attrs.pop("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise DocumentError(f"stream={stream!r} is not stdout or stderr", file=file, line=line)
    flags = [flag for flag in info.flags if flag not in ("output", "timed_out")]
    if flags:
        attrs["flags"] = " ".join(flags)
    return OutputBlock(
        stream=stream,
        text=code,
        language=info.language or "text",
        exit_code=exit_code,
        timed_out="timed_out" in info.flags,
        attrs=attrs,
    )


def _strip_final_newline(code: str) -> str:
    return code[:-1] if code.endswith("\n") else code


def _raw(lines: list[str], segment: _Segment) -> str:
    chunk = lines[segment.start : segment.end]
    while chunk and not chunk[-1].strip():
        chunk.pop()
    while chunk and not chunk[0].strip():
        chunk.pop(0)
    return "\n".join(chunk)


def parse_body(text: str, display: str, first_line: int = 1) -> list[tuple[Any, int]]:
    """Content blocks (with lines) of a message body, e.g. a model reply or an include."""
    lines = text.split("\n")
    blocks: list[tuple[Any, int]] = []
    parser = MarkdownParser()
    holder = ParsedSession(source_file=display, source_path=display)
    message = Message(role="assistant")
    block_lines: list[int] = []
    for segment in _segments(lines):
        line = segment.start + first_line
        if segment.kind == "heading":
            raise DocumentError(
                f"a role heading `## {segment.role}` inside included or generated text",
                file=display,
                line=line,
                hint="included text goes inside a message; use `###` for its headings",
            )
        if segment.kind == "text":
            message.content.append(
                TextBlock(value=_text_value(lines, segment), quoted=segment.quoted)
            )
            block_lines.append(first_text_line(lines, segment) + first_line - 1)
        else:
            parser._fence_block(holder, message, block_lines, segment, line)
    blocks = list(zip(message.content, block_lines, strict=True))
    if message.message_metadata is not None:
        raise DocumentError(
            "a msg-metadata block inside included or generated text",
            file=display,
            line=first_line,
        )
    return blocks
