"""Where the macros of a text are: links found in linear time, code left out.

A macro is a link ``[@text](domarkx://command?query)`` with optional
``[key](value)`` links right after it. ``find_macros`` finds them in time
linear in the text; ``mask_code`` blanks the code a Markdown reader finds
(code blocks at any depth, by ``parsing.blocks``, and inline code spans), so
that macros there stay literal; ``is_macro`` leaves out escaped links and
images; ``escape_macros`` writes a backslash before every macro.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from domarkx.parsing.blocks import code_line_ranges

# What a macro link is. Applied by ``find_macros``, which reads the same matches in
# time linear in the text (``MACRO_PATTERN.finditer`` rescans the rest of the text
# from every ``[@x](domarkx://`` left open, quadratic in how many there are).
MACRO_PATTERN = re.compile(
    r"\[@(?P<text>[^\[\]\n]*)\]\((?P<url>domarkx://[^)\s]*)\)"
    r"(?P<extra>(?:\[[^\]\n]*\]\([^)\s]*\))*)"
)
# The pieces ``find_macros`` reads one after the other.
_HEAD = re.compile(r"\[@(?P<text>[^\[\]\n]*+)\]\(domarkx://")
_URL_END = re.compile(r"[)\s]")
_EXTRAS = re.compile(r"(?:\[[^\]\n]*+\]\([^)\s]*+\))*+")
_BACKTICKS = re.compile(r"`+")
# Indentation enough for an indented code block (in a quote or a list item too).
_INDENTED = re.compile(r" {4}|\t")


@dataclass(frozen=True)
class MacroMatch:
    """One macro link found in a text; ``group`` and ``start``/``end`` as a ``re.Match``'s."""

    string: str
    span: tuple[int, int]
    groups: tuple[str, str, str]  # text, url, extra

    def start(self) -> int:
        return self.span[0]

    def end(self) -> int:
        return self.span[1]

    def group(self, name: str | int = 0) -> str:
        if name == 0:
            return self.string[self.span[0] : self.span[1]]
        return self.groups[("text", "url", "extra").index(str(name))]


def find_macros(text: str) -> Iterator[MacroMatch]:
    """The matches of ``MACRO_PATTERN.finditer(text)``, in time linear in ``text``.

    A URL runs to the first ``)`` or white space. Once a search for that end
    has gone from one URL's start to a position, every later URL that starts
    before it ends there too: the end found is kept, so no part of the text is
    searched twice, however many links are left open.
    """
    if "domarkx://" not in text:
        return
    length = len(text)
    searched_from, url_end = -1, -1
    position = 0
    while True:
        head = _HEAD.search(text, position)
        if head is None:
            return
        url_start = head.end() - len("domarkx://")
        if not searched_from <= url_start <= url_end:
            stop = _URL_END.search(text, url_start)
            searched_from, url_end = url_start, stop.start() if stop else length
        if url_end == length or text[url_end] != ")":
            position = head.start() + 1
            continue
        extras = _EXTRAS.match(text, url_end + 1)
        assert extras is not None  # it matches the empty string
        yield MacroMatch(
            text,
            (head.start(), extras.end()),
            (head.group("text"), text[url_start:url_end], extras.group()),
        )
        position = extras.end()


# One ``[key](value)`` parameter after a macro link.
_EXTRA_PARAM = re.compile(r"\[(?P<key>[^\]\n]*)\]\((?P<value>[^)\s]*)\)")


def command_and_params(match: MacroMatch) -> tuple[str, dict[str, str]]:
    """A macro link's command (``include``) and parameters: its query, then ``[key](value)``s."""
    url = match.group("url")[len("domarkx://") :]
    command, _, query = url.partition("?")
    params: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            params[unquote(key)] = unquote(value.replace("+", " "))
    for extra in _EXTRA_PARAM.finditer(match.group("extra")):
        params[unquote(extra.group("key"))] = unquote(extra.group("value"))
    return command.strip("/"), params


def is_macro(text: str, match: MacroMatch) -> bool:
    """Whether a match is a link (not ``\\[@..]`` escaped, not an image ``![@..]``)."""
    start = match.start()
    if _escaped(text, start):
        return False
    return not (start > 0 and text[start - 1] == "!" and not _escaped(text, start - 1))


def _escaped(text: str, index: int) -> bool:
    """Whether ``text[index]`` follows an odd number of backslashes."""
    count = 0
    while index - count > 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def escape_macros(text: str) -> str:
    """``text`` with a backslash before every macro in it, so that none expands on import."""
    if "domarkx://" not in text:
        return text
    masked = mask_code(text)
    pieces: list[str] = []
    position = 0
    for match in find_macros(masked):
        if is_macro(masked, match):
            pieces += [text[position : match.start()], "\\"]
            position = match.start()
    pieces.append(text[position:])
    return "".join(pieces)


def mask_code(text: str) -> str:
    """``text`` with code blocks and inline code spans blanked: macros there stay literal.

    Text can hold code blocks of its own: in a quote (the older format quotes
    whole messages), in a list item, or brought by an include; fenced or
    indented, whatever a Markdown reader shows as code.
    """
    if "`" not in text and "~~~" not in text and not _INDENTED.search(text):
        return text
    text = _mask_fences(text)
    if "`" not in text:
        return text
    # A run of backticks opens a code span closed by the next run of the same length
    # (CommonMark); found in one pass, so that many unmatched runs cost no more.
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(index)
    pieces: list[str] = []
    position = 0
    index = 0
    while index < len(runs):
        start, end = runs[index]
        same = by_length[end - start]
        later = bisect.bisect_right(same, index)
        if later == len(same):
            index += 1
            continue
        close = runs[same[later]][1]
        pieces += [text[position:start], " " * (close - start)]
        position = close
        index = same[later] + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _mask_fences(text: str) -> str:
    """``text`` with the lines of its code blocks blanked, at any depth (a quote, a
    list item), as the document's reader finds them (``parsing.blocks``)."""
    lines = text.split("\n")
    for start, end in code_line_ranges(lines):
        for index in range(start, end):
            lines[index] = " " * len(lines[index])
    return "\n".join(lines)
