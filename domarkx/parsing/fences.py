"""Fenced code blocks and their info strings: the one place that reads and writes them.

Reading follows CommonMark: an opening fence is indented by at most three
spaces and is three or more backticks or tildes (a backtick fence's info string
holds no backtick); it is closed by a line of the same character, at least as
long, indented by at most three spaces and followed by nothing but spaces or
tabs. Writing picks a fence longer than any run of its character in the text,
so whatever the text holds, the block reads back as written.

An info string is ``<language> [name=N] [key=value ...] [flag ...]``. Words are
split at spaces and tabs; single quotes keep everything literal, double quotes
keep everything but ``\\"`` and ``\\\\``, and a backslash outside quotes is an
ordinary character. A word with an ``=`` outside quotes (and something before
it) is an attribute, any other word a flag. ``format_info`` quotes a word only
when reading it back needs it, so ``parse_info(format_info(...))`` gives back
what went in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Flags that make a fence a domarkx block rather than code (spec section 1).
SPECIAL_FLAGS = ("session-config", "setup-script", "msg-metadata", "output")

_OPEN = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_BLANKS = " \t"
# Printable ASCII, spaces and tabs, without quotes or backslashes: split() reads it.
_PLAIN_INFO = re.compile(r"[ \t!#-&(-\[\]-~]*")
# Characters that make a word need quotes when written (a backslash does not:
# outside quotes it is an ordinary character, and a reader sees it as written).
_NEEDS_QUOTES = re.compile(r"[\s'\"`]")


@dataclass(frozen=True)
class Fence:
    """An opening fence line: its indent, character, length and (stripped) info string."""

    indent: int
    char: str
    size: int
    info: str

    def closed_by(self, line: str) -> bool:
        """Whether ``line`` (without its newline) closes this fence."""
        stripped = line.lstrip(" ")
        if len(line) - len(stripped) > 3 or not stripped.startswith(self.char * self.size):
            return False
        return stripped.lstrip(self.char).strip(_BLANKS) == ""

    def content(self, line: str) -> str:
        """A line inside the fence, without up to ``indent`` spaces of the opening's indent."""
        if not self.indent:
            return line
        spaces = len(line) - len(line.lstrip(" "))
        return line[min(spaces, self.indent) :]


def open_fence(line: str) -> Fence | None:
    """The fence ``line`` (without its newline) opens, or None."""
    match = _OPEN.fullmatch(line)
    if match is None:
        return None
    marker, rest = match.group(2), match.group(3)
    if marker[0] == "`" and "`" in rest:
        return None
    return Fence(len(match.group(1)), marker[0], len(marker), rest.strip(_BLANKS))


def fence_end(lines: list[str], start: int, stop: int | None = None) -> int:
    """Index one past the line that closes the fence opening at ``lines[start]``.

    An unclosed fence runs to ``stop`` (the end of its container), as CommonMark says.
    """
    fence = open_fence(lines[start])
    if fence is None:
        raise ValueError(f"line {start + 1} opens no fence")
    stop = len(lines) if stop is None else stop
    for index in range(start + 1, stop):
        if fence.closed_by(lines[index]):
            return index + 1
    return stop


def fence_size(text: str, char: str) -> int:
    """How many ``char`` a fence needs so that no line of ``text`` closes it (at least 3)."""
    if char not in text:
        return 3
    longest = max(len(run) for run in re.findall(re.escape(char) + "+", text))
    return max(3, longest + 1)


def fence_char(info: str) -> str:
    """Backticks, unless the info string holds one (a backtick fence cannot carry it)."""
    return "~" if "`" in info else "`"


def write_fence(text: str, info: str = "", *, final_newline: bool = False) -> str:
    """``text`` as a fenced block that ``code_text`` reads back as ``text``, with ``info``.

    ``final_newline`` writes ``text`` and a newline whatever the text is, as the
    model is shown program output (never read back).
    """
    char = fence_char(info)
    marker = char * fence_size(text, char)
    # "" is no line and "\n" * k is k blank lines (see code_text); other text ends a line.
    body = text + "\n" if final_newline or text.strip("\n") else text
    # An info string starting with the fence character would lengthen the fence.
    space = " " if info.startswith(char) else ""
    return f"{marker}{space}{info}\n{body}{marker}"


def code_text(lines: list[str]) -> str:
    """The text of a fence's content lines (indent removed), without the final newline.

    A fence of only blank lines holds that many newlines, so that a fence with
    one blank line and a fence with none are told apart, as a reader shows them.
    """
    if lines and not any(lines):
        return "\n" * len(lines)
    return "\n".join(lines)


# --- info strings -----------------------------------------------------------------


@dataclass
class InfoString:
    """A fence's info string, read: ``name`` is the ``name=`` attribute, kept apart."""

    language: str
    attrs: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    name: str | None = None

    @property
    def special(self) -> str | None:
        """The domarkx block kind this fence marks (``output``, ...), if any."""
        for flag in SPECIAL_FLAGS:
            if flag in self.flags:
                return flag
        return None


def parse_info(info: str) -> InfoString:
    """Language, ``name=``, other attributes and flags of an info string."""
    words = _words(info.strip(_BLANKS))
    if not words:
        return InfoString("")
    language = words[0][0]
    attrs: dict[str, str] = {}
    flags: list[str] = []
    for word, equals in words[1:]:
        if equals > 0:
            attrs[word[:equals]] = word[equals + 1 :]
        else:
            flags.append(word)
    name = attrs.pop("name", None)
    return InfoString(language, attrs, flags, name)


def format_info(
    language: str,
    attrs: dict[str, str] | None = None,
    flags: list[str] | None = None,
    *,
    name: str | None = None,
    marker: str | None = None,
) -> str:
    """The info string ``parse_info`` reads back as these parts.

    ``marker`` is a flag written right after the language, as in ``text output``.
    """
    flags = list(flags or [])
    attrs = dict(attrs or {})
    lead = [marker] if marker else []
    rest: list[str] = [_quote(flag, bare_equals=False) for flag in lead]
    if name is not None:
        rest.append(f"name={_quote(name)}")
    rest += [f"{_quote(key, bare_equals=False)}={_quote(value)}" for key, value in attrs.items()]
    rest += [_quote(flag, bare_equals=False) for flag in flags]
    if not (language or rest):
        return ""
    quoted = " ".join([_quote(language), *rest])
    if language and not any(char in _BLANKS for char in language) and quoted[0] == "'":
        # A reader takes the first word as written: keep the language literal
        # (`it's`) wherever it reads back the same.
        literal = " ".join([language, *rest])
        if parse_info(literal) == parse_info(quoted):
            return literal
    return quoted


def _quote(word: str, *, bare_equals: bool = True) -> str:
    """``word`` as it must be written to read back as itself."""
    if word and not _NEEDS_QUOTES.search(word) and (bare_equals or "=" not in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def _words(info: str) -> list[tuple[str, int]]:
    """Each word of ``info`` with the index of its first unquoted ``=`` (-1 if none)."""
    if _PLAIN_INFO.fullmatch(info):
        return [(word, word.find("=")) for word in info.split()]
    words: list[tuple[str, int]] = []
    current: list[str] = []
    equals = -1
    in_word = False
    index = 0
    length = len(info)
    while index < length:
        char = info[index]
        if char in _BLANKS:
            if in_word:
                words.append(("".join(current), equals))
                current, equals, in_word = [], -1, False
            index += 1
            continue
        in_word = True
        if char == "'":
            end = info.find("'", index + 1)
            if end == -1:
                return _unquoted_words(info)
            current.append(info[index + 1 : end])
            index = end + 1
        elif char == '"':
            index += 1
            while index < length and info[index] != '"':
                if info[index] == "\\" and index + 1 < length and info[index + 1] in '"\\':
                    index += 1
                current.append(info[index])
                index += 1
            if index >= length:
                return _unquoted_words(info)
            index += 1
        else:
            if char == "=" and equals == -1:
                equals = sum(len(part) for part in current)
            current.append(char)
            index += 1
    if in_word:
        words.append(("".join(current), equals))
    return words


def _unquoted_words(info: str) -> list[tuple[str, int]]:
    """Words of an info string whose quotes do not pair up: taken literally."""
    return [(word, word.find("=")) for word in re.split(r"[ \t]+", info) if word]
