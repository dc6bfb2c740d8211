"""The CommonMark block reader: markdown-it-py's block rules, tried only where they can match.

markdown-it-py tries its block rules one after the other at every line that
may start a block (ten of them), and again, as "terminators", at every line
of a paragraph, a list item or a quote (could a fence, a heading, a list...
start here?). Each try is a Python call and a ``logging.debug`` call, most
of them to learn that the line's first character cannot start that block:
about two thirds of a session document's parse.

CommonMark says which characters can start each block (after at most three
spaces of indent): a fence ``` ` ``` or ``~``, a quote ``>``, a thematic break
``*``, ``-`` or ``_``, a list item ``*``, ``-``, ``+`` or a digit, a link
reference definition ``[``, an HTML block ``<``, an ATX heading ``#``; an
indented code block only a line indented four columns or more. Here each of
markdown-it's rule chains is one rule that looks at the line's first
character and tries, in markdown-it's order, only the rules that can start
with it; a line indented as code, and any rule not named above, is tried as
before. The rules themselves are markdown-it's own, untouched: the tokens
are the same (tests/test_block_reader.py compares them on the CommonMark
spec's examples).

The state of a document's parse (markdown-it's ``StateBlock``) starts with
each line's start, end and indent; markdown-it finds them a character at a
time, here a line at a time (``_markers``: the same numbers, half the time).
Its tokens (some 150 for a 5 KB session) are made with their fields set one
by one rather than through the dataclass's ``__init__`` (``_block_token``),
as long as markdown-it's ``Token`` has the fields and defaults it has now.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.parser_block import ParserBlock, RuleFuncBlockType
from markdown_it.ruler import Ruler
from markdown_it.rules_block import (
    blockquote,
    code,
    fence,
    heading,
    hr,
    html_block,
    list_block,
    reference,
)
from markdown_it.rules_block.state_block import StateBlock
from markdown_it.token import Token

# The characters a block can start with (after its indent), by markdown-it's rule.
# ``code`` starts with none: it matches only a line indented as code, which is
# never filtered.
_STARTS: dict[RuleFuncBlockType, str] = {
    code: "",
    fence: "`~",
    blockquote: ">",
    hr: "*-_",
    list_block: "*-+0123456789",
    reference: "[",
    html_block: "<",
    heading: "#",
}


def _dispatcher(rules: list[RuleFuncBlockType]) -> RuleFuncBlockType:
    """One rule for a chain: the chain's rules that can start with the line's character."""
    specific = "".join(sorted({c for rule in rules for c in _STARTS.get(rule, "")}))
    anywhere = [rule for rule in rules if rule not in _STARTS]  # paragraph, lheading, table...
    by_char = {
        char: [rule for rule in rules if rule not in _STARTS or char in _STARTS[rule]]
        for char in specific
    }

    def dispatch(state: StateBlock, line: int, end: int, silent: bool) -> bool:
        if state.sCount[line] - state.blkIndent >= 4:
            tried = rules  # indented as code (or lazily continued): every rule, as before
        else:
            src = state.src
            pos = state.bMarks[line] + state.tShift[line]
            tried = by_char.get(src[pos], anywhere) if pos < len(src) else rules
        for rule in tried:  # noqa: SIM110 (a loop: no generator made at every line)
            if rule(state, line, end, silent):
                return True
        return False

    return dispatch


class _DispatchingRuler(Ruler[RuleFuncBlockType]):
    """markdown-it's block ruler, whose chains are each one ``_dispatcher``."""

    def __init__(self, ruler: Ruler[RuleFuncBlockType]) -> None:
        super().__init__()
        self.ruler = ruler
        self.chains: dict[str, list[RuleFuncBlockType]] = {}

    def getRules(self, chainName: str = "") -> list[RuleFuncBlockType]:
        found = self.chains.get(chainName)
        if found is None:
            rules = self.ruler.getRules(chainName)
            found = self.chains[chainName] = [_dispatcher(rules)] if rules else []
        return found

    def get_active_rules(self) -> list[str]:
        return self.ruler.get_active_rules()


def _markers(src: str) -> tuple[list[int], list[int], list[int], list[int]]:
    """Each line's start, end, indent (characters) and indent width (tabs to 4 columns).

    As markdown-it's ``StateBlock`` finds them character by character, a line at
    a time: a last line without a newline that holds only spaces and tabs (or
    nothing) has none.
    """
    starts: list[int] = []
    ends: list[int] = []
    shifts: list[int] = []
    widths: list[int] = []
    start = 0
    length = len(src)
    for line in src.split("\n"):
        end = start + len(line)
        rest = line.lstrip(" \t")
        if end == length and not rest:
            break
        indent = len(line) - len(rest)
        width = indent
        if indent and "\t" in line[:indent]:
            width = 0
            for char in line[:indent]:
                width += 4 - width % 4 if char == "\t" else 1
        starts.append(start)
        ends.append(end)
        shifts.append(indent)
        widths.append(width)
        start = end + 1
    return starts, ends, shifts, widths


def _block_token(kind: str, tag: str, nesting: Literal[-1, 0, 1], level: int) -> Token:
    """``Token(kind, tag, nesting)`` as ``StateBlock.push`` makes it (a block token at
    ``level``), its fields set one by one: half the time of the dataclass's ``__init__``
    with its two default factories and ``__post_init__``."""
    token: Token = _new(Token)
    token.type = kind
    token.tag = tag
    token.nesting = nesting
    token.attrs = {}
    token.map = None
    token.level = level
    token.children = None
    token.content = ""
    token.markup = ""
    token.info = ""
    token.meta = {}
    token.block = True
    token.hidden = False
    return token


_new = object.__new__
# ``_block_token`` sets the fields of markdown-it's Token as this version has them; with
# any other (a field more, another default) the state makes tokens as markdown-it does.
_TOKENS_KNOWN = [field.name for field in dataclasses.fields(Token)] == [
    *("type", "tag", "nesting", "attrs", "map", "level", "children", "content", "markup"),
    *("info", "meta", "block", "hidden"),
]
if _TOKENS_KNOWN:
    _stock = Token("p", "p", 1)
    _stock.block = True
    _TOKENS_KNOWN = _block_token("p", "p", 1, 0) == _stock


class _State(StateBlock):
    """markdown-it's block state, its line markers found a line at a time (``_markers``),
    its tokens made by ``_block_token``."""

    def __init__(self, src: str, md: MarkdownIt, env: Any, tokens: list[Token]) -> None:
        super().__init__("", md, env, tokens)  # every other field, as markdown-it sets it
        self.src = src
        starts, ends, shifts, widths = _markers(src)
        self.lineMax = len(starts)
        # The fake last line markdown-it adds, to spare bounds checks.
        starts.append(len(src))
        ends.append(len(src))
        shifts.append(0)
        widths.append(0)
        self.bMarks, self.eMarks, self.tShift, self.sCount = starts, ends, shifts, widths
        self.bsCount = [0] * len(starts)

    if _TOKENS_KNOWN:

        def push(self, ttype: str, tag: str, nesting: Literal[-1, 0, 1]) -> Token:
            """Push a new token to the stream (``StateBlock.push``)."""
            if nesting < 0:
                self.level -= 1  # closing tag
            token = _block_token(ttype, tag, nesting, self.level)
            if nesting > 0:
                self.level += 1  # opening tag
            self.tokens.append(token)
            return token


class _BlockParser(ParserBlock):
    """markdown-it's block parser, with ``_State`` for the state of a document."""

    def parse(
        self, src: str, md: MarkdownIt, env: Any, outTokens: list[Token]
    ) -> list[Token] | None:
        if not src:
            return None
        state = _State(src, md, env, outTokens)
        self.tokenize(state, state.line, state.lineMax)
        return state.tokens


@lru_cache(maxsize=1)
def block_reader() -> MarkdownIt:
    """A CommonMark parser of blocks only (no inline parsing), built once per process."""
    parser = MarkdownIt("commonmark")
    parser.disable(["inline", "text_join"], ignoreInvalid=True)
    block = _BlockParser()
    block.ruler = _DispatchingRuler(parser.block.ruler)
    parser.block = block
    return parser
