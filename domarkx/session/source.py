"""A session document's source as bytes: where its messages start, what to append.

Chat and fork edit the user's own file, so they work on the bytes as read and
never re-write what is there: a prefix of the file is kept exactly (macros,
includes, spacing, comments, line endings), and new text goes after it. The
parser's line numbers (``ParsedSession.message_lines``) say where a message
starts; a line here is what the parser counts as one (``\\n``, ``\\r\\n`` or a
lone ``\\r`` ends it).
"""

from __future__ import annotations

import re

from domarkx.parsing.markdown import ParsedSession

_LINE_END = re.compile(rb"\r\n|\r|\n")


def line_offset(data: bytes, line: int) -> int:
    """The byte offset where 1-based ``line`` starts (the end of ``data`` past its last line)."""
    if line <= 1:
        return 0
    for number, match in enumerate(_LINE_END.finditer(data), start=2):
        if number == line:
            return match.end()
    return len(data)


def before_message(data: bytes, parsed: ParsedSession, index: int) -> bytes:
    """Every byte before message ``index`` (0-based) starts; all of ``data`` past the last."""
    if index >= len(parsed.message_lines):
        return data
    return data[: line_offset(data, parsed.message_lines[index])]


def newline_of(data: bytes) -> bytes:
    """The document's own line ending, so that appended lines match the rest."""
    return b"\r\n" if b"\r\n" in data else b"\n"


def append_text(data: bytes, text: str) -> bytes:
    """``data`` unchanged, then a blank line, then ``text`` (rendered ``## role`` sections).

    Only what is missing is added before ``text``: the last line's end, then one
    empty line, so that the first heading starts a new block.
    """
    newline = newline_of(data)
    body = text.encode("utf-8")
    if newline != b"\n":
        body = body.replace(b"\n", newline)
    if not data:
        return body
    gap = b""
    if not data.endswith((b"\n", b"\r")):
        gap += newline
    if not _ends_with_blank_line(data + gap):
        gap += newline
    return data + gap + body


def trim_end(data: bytes) -> bytes:
    """``data`` without the blank lines at its end, its last line ended (a fork's end)."""
    lines = data.splitlines(keepends=True)  # bytes split at \n, \r\n and \r only
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and not lines[-1].endswith((b"\n", b"\r")):
        lines[-1] += newline_of(data)
    return b"".join(lines)


def _ends_with_blank_line(data: bytes) -> bool:
    lines = data.splitlines()
    return len(lines) >= 1 and not lines[-1].strip() and data.endswith((b"\n", b"\r"))
