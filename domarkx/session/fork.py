"""``domarkx fork``: a new session from the start of another, byte for byte.

The new document is a prefix of the old one's bytes: its front matter, the
blocks before the first message (preamble, session-config, setup script) and
its first N messages, as written (macros and includes unexpanded; an include
resolves against the new file's folder). Blank lines at the cut are dropped.
"""

from __future__ import annotations

from pathlib import Path

from domarkx.data.atomic import write_atomic
from domarkx.errors import DomarkxError, UsageError
from domarkx.parsing.markdown import MarkdownParser, decode_document, read_document
from domarkx.session.files import check_document
from domarkx.session.names import display_path
from domarkx.session.source import before_message, trim_end


def fork_text(data: bytes, path: Path, display: str, messages: int) -> bytes:
    """The first ``messages`` messages of the document ``data`` (and all that precedes them)."""
    parser = MarkdownParser()
    parsed = parser.parse_text(decode_document(data, display), display, Path(path).resolve())
    total = len(parsed.messages)
    if messages < 0 or messages > total:
        raise UsageError(
            f"--messages {messages}: {display} has {total} message{'' if total == 1 else 's'}",
            hint=f"give a number from 0 to {total}",
        )
    text = trim_end(before_message(data, parsed, messages))
    # A prefix cut at a heading reads back as the same start; check it all the same.
    forked = parser.parse_text(decode_document(text, display), display, Path(path).resolve())
    if forked.messages != parsed.messages[:messages] or forked.front_matter != parsed.front_matter:
        raise DomarkxError(
            f"the first {messages} messages do not read back the same on their own",
            file=display,
            hint="please report this document: the fork would change its meaning",
        )
    return text


def fork(path: Path, messages: int, output: Path, root: Path) -> None:
    """Write ``output``, a new session made of the start of ``path``; never overwrites."""
    display = display_path(path, root)
    check_document(path, root, display)
    text = fork_text(read_document(path, display), path, display, messages)
    if output.exists():
        raise DomarkxError(
            "already exists; fork writes a new session",
            file=display_path(output, root),
            hint="choose another name with -o, or remove that file first",
        )
    write_atomic(output, text)
