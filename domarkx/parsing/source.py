"""A session document's bytes to text and front matter.

Text is UTF-8 with ``\\n`` line endings (a byte order mark and ``\\r\\n`` are
read like plain ``\\n``). The front matter is YAML between a first line ``---``
and the next ``---`` or ``...``; its lines are kept as blanks so that every
later line keeps its number.
"""

from __future__ import annotations

from typing import Any

from domarkx.errors import DocumentError
from domarkx.parsing.data import load_yaml


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


def front_matter_end(lines: list[str]) -> int | None:
    """The index of the line that closes the front matter; 0 with none; None if unclosed."""
    if not lines or lines[0].rstrip() != "---":
        return 0
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return index
    return None


def split_front_matter(text: str, file: str) -> tuple[dict[str, Any], list[str], int]:
    """Front matter mapping, the document's lines (front matter blanked), its last line."""
    lines = text.split("\n")
    index = front_matter_end(lines)
    if index == 0:
        return {}, lines, 0
    if index is None:
        raise DocumentError(
            "front matter is not closed",
            file=file,
            line=1,
            hint="end the front matter with a line `---`",
        )
    data = load_yaml("\n".join(lines[1:index]), file=file, first_line=2, what="front matter")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DocumentError(
            f"front matter must be a YAML mapping, not {type(data).__name__}",
            file=file,
            line=2,
            hint="write `key: value` lines between the two `---` lines",
        )
    return data, [""] * (index + 1) + lines[index + 1 :], index + 1
