"""A document's top-level blocks, by source line, as a CommonMark reader finds them.

markdown-it-py (a CommonMark parser) decides where headings, fences, quotes,
lists, HTML blocks and paragraphs start and end; only its block rules run (a
session needs no inline parsing). A session is then cut into three kinds of
piece: level-2 headings (role headings), fenced code at the top level, and
the text between them, sliced from the source lines so that it is kept byte
for byte. A fence inside a quote, a list item or an HTML block is text, as it
is to any Markdown reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from domarkx.parsing import fences

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

_QUOTE_MARKER = re.compile(r" {0,3}> ?")
# A lazy line that a quote marker would turn into a setext underline.
_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*")
# A line that may be an ATX level-2 heading (a role heading), where no container holds it.
_ATX_H2 = re.compile(r" {0,3}##(?:[ \t]|$)")


@dataclass(frozen=True)
class Heading:
    """A level-2 heading (ATX or setext): a role heading. ``text`` is as rendered."""

    start: int  # 0-based index of the first line
    end: int  # 0-based index one past the last line
    text: str


@dataclass(frozen=True)
class FencedCode:
    """A fenced code block at the top level; ``code`` without the final newline."""

    start: int
    end: int
    info: str
    code: str


@dataclass(frozen=True)
class Text:
    """Text between headings and fences; ``quoted`` when it is a blockquote."""

    start: int
    end: int
    quoted: bool = False


Block = Heading | FencedCode | Text


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # reason: markdown-it, ~40-80 ms at start-up; only a parse needs it
    from domarkx.parsing.commonmark import block_reader

    return block_reader()


def blocks(lines: list[str]) -> list[Block]:
    """The headings, fences and text runs of ``lines`` (split on ``\\n``), in order."""
    from markdown_it.common.utils import unescapeAll  # reason: as in _parser (markdown-it)

    tokens = _parser().parse("\n".join(lines))
    found: list[Block] = []
    # Neighbouring text runs of one kind (quoted or not) join; runs of blank lines
    # only are dropped. ``run`` is the text run not yet in ``found``: [start, end, quoted].
    run: list[Any] | None = None
    position = 0
    # Each top-level block, and the text before it: (start, end, what it is).
    pieces: list[tuple[int, int, Any]] = []
    for index, token in enumerate(tokens):
        if token.level != 0 or token.nesting == -1 or token.map is None:
            continue
        start, end = token.map
        if start > position:
            pieces.append((position, start, False))
        position = end
        kind = token.type
        if kind == "heading_open" and token.tag == "h2":
            text = unescapeAll(tokens[index + 1].content).strip()
            pieces.append((start, end, Heading(start, end, text)))
        elif kind == "fence":
            pieces.append((start, end, _fenced(lines, start, end)))
        elif kind == "blockquote_open":
            pieces.append((start, end, _quotable(lines[start:end])))
        else:
            pieces.append((start, end, False))
    if position < len(lines):
        pieces.append((position, len(lines), False))
    for start, end, what in pieces:
        if what is True or what is False:  # text, quoted or not
            if not "".join(lines[start:end]).strip():
                continue  # blank lines only (one join, not a strip of each line)
            if run is not None and run[2] is what:
                run[1] = end
                continue
            if run is not None:
                found.append(Text(run[0], run[1], run[2]))
            run = [start, end, what]
            continue
        if run is not None:
            found.append(Text(run[0], run[1], run[2]))
            run = None
        found.append(what)
    if run is not None:
        found.append(Text(run[0], run[1], run[2]))
    return found


def top_level_fences(lines: list[str]) -> list[FencedCode]:
    """The fenced code blocks of ``lines`` at the top level: ``blocks(lines)``'s fences.

    Without a fence's characters there is none, and nothing is parsed.
    """
    if not any("```" in line or "~~~" in line for line in lines):
        return []
    tokens = _parser().parse("\n".join(lines))
    return [
        _fenced(lines, token.map[0], token.map[1])
        for token in tokens
        if token.type == "fence" and token.level == 0 and token.map is not None
    ]


def leading_blocks(lines: list[str]) -> list[Block]:
    """``blocks(lines)`` up to the first level-2 heading (that heading included, if any).

    Reads only as far as it needs: a CommonMark reader decides each line from
    the lines before it, so the blocks before a heading read the same in a
    prefix that ends at that heading as in the whole document. The prefix
    grows to the next line that may be a heading, at least doubling, so a
    document is read at most about twice over.
    """
    end = 0
    while True:
        end = min(len(lines), max(2 * end, _next_heading_like(lines, end) + 1))
        found = blocks(lines[:end])
        heading = next((i for i, b in enumerate(found) if isinstance(b, Heading)), None)
        if heading is not None:
            return found[: heading + 1]
        if end == len(lines):
            return found


def _next_heading_like(lines: list[str], start: int) -> int:
    """The index of the first line from ``start`` that may be an ATX level-2 heading."""
    for index in range(start, len(lines)):
        if _ATX_H2.match(lines[index]):
            return index
    return len(lines)


def code_line_ranges(lines: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` line ranges of every code block, fenced or indented, at any depth.

    Inside a quote or a list item too: whatever a Markdown reader shows as code.
    An unclosed fence runs to the end of its container, as CommonMark says.
    """
    tokens = _parser().parse("\n".join(lines))
    return [
        (token.map[0], token.map[1])
        for token in tokens
        if token.type in ("fence", "code_block") and token.map is not None
    ]


def is_open_at_end(text: str) -> bool:
    """Whether ``text`` leaves a block open (an unclosed fence, an HTML comment, ...)
    that would take in what is written after it, even after a blank line."""
    # Only a fence or an HTML block of the kinds that end at a closing mark (not at
    # a blank line) can: without their characters, no parse is needed.
    if "```" not in text and "~~~" not in text and "<" not in text:
        return False
    lines = text.split("\n")
    probe = len(lines) + 1
    found = blocks([*lines, "", "## x"])
    return not (found and isinstance(found[-1], Heading) and found[-1].start == probe)


def _quotable(quote: list[str]) -> bool:
    """Whether the quote means the same with a marker on every line (as export writes it).

    A lazy continuation line (no marker) means the same with one, except a line
    of ``=``: marked, it would make the paragraph above it a heading. Such a
    quote is kept as plain text, markers and all.
    """
    return not any(_UNDERLINE.fullmatch(line) and not _QUOTE_MARKER.match(line) for line in quote)


def _fenced(lines: list[str], start: int, end: int) -> FencedCode:
    fence = fences.open_fence(lines[start])
    assert fence is not None, "markdown-it found a fence here"
    closed = end - start > 1 and fence.closed_by(lines[end - 1])
    content = lines[start + 1 : end - 1 if closed else end]
    return FencedCode(
        start, end, fence.info, fences.code_text([fence.content(li) for li in content])
    )


def text_value(lines: list[str], block: Text) -> str:
    """The text of a run, without blank lines around it (and quote markers if quoted)."""
    chunk = lines[block.start : block.end]
    if block.quoted:
        chunk = [_QUOTE_MARKER.sub("", line, count=1) for line in chunk]
    return "\n".join(_trim(chunk))


def quote(text: str) -> str:
    """``text`` as a blockquote: ``> `` before every line, ``>`` alone on blank lines."""
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def trim_blank_lines(text: str) -> str:
    """``text`` without its leading and trailing blank lines, as a text block is read."""
    return "\n".join(_trim(text.split("\n")))


def raw_text(lines: list[str], block: Block) -> str:
    """The source lines of a block, without blank lines around it."""
    return "\n".join(_trim(lines[block.start : block.end]))


def first_line(lines: list[str], block: Block) -> int:
    """1-based line of the block's first non-blank line."""
    for index in range(block.start, block.end):
        if lines[index].strip():
            return index + 1
    return block.start + 1


def _trim(chunk: list[str]) -> list[str]:
    start, end = 0, len(chunk)
    while start < end and not chunk[start].strip():
        start += 1
    while end > start and not chunk[end - 1].strip():
        end -= 1
    return chunk[start:end]
