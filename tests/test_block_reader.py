"""The block reader (``parsing.commonmark``) reads every document as markdown-it-py does.

It tries markdown-it's block rules only where the line's first character can
start them, and finds the lines' markers a line at a time; the tokens must be
the very ones markdown-it's own CommonMark parser (block rules only) gives: the 652 examples of the CommonMark spec,
each also inside a quote, inside a list item, after a paragraph line, after
an ordered list item and indented, plus the repository's own documents.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from domarkx.parsing.blocks import blocks
from domarkx.parsing.commonmark import block_reader

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "data" / "commonmark-spec-0.30.json"


def _examples() -> list[str]:
    return [example["markdown"] for example in json.loads(SPEC.read_text())["examples"]]


def _variants(text: str) -> list[str]:
    return [
        text,
        "> " + text.replace("\n", "\n> "),
        "- " + text.replace("\n", "\n  "),
        "1. item\n" + text,
        "a paragraph\n" + text,
        "    " + text,
        "\t" + text.replace("\n", "\n\t"),
    ]


def _stock() -> MarkdownIt:
    parser = MarkdownIt("commonmark")
    parser.disable(["inline", "text_join"], ignoreInvalid=True)
    return parser


def _fields(tokens: list[Token]) -> list[tuple[object, ...]]:
    """Every field of every token (a field the reader left unset fails here)."""
    names = [field.name for field in dataclasses.fields(Token)]
    return [(type(t), *(getattr(t, name) for name in names)) for t in tokens]


# Lines a state's markers must get right: tabs in the indent, a last line of only
# spaces and tabs with and without its newline, blank lines, a lone newline.
EDGES = [
    "",
    "\n",
    " ",
    "\t",
    "a\n \t",
    "a\n \t\n",
    "\n\n\n",
    " \t x\n\t\ty\n  \t  z",
    "- a\n\t- b\n \t\tc",
    "> a\n>\tb\n\t> c",
    "```\n\tcode\n  \t\n```",
    "x\n   ",
]


def test_the_spec_examples_give_markdown_its_own_tokens():
    stock, reader = _stock(), block_reader()
    differ = [
        (number, variant)
        for number, text in enumerate([*_examples(), *EDGES], start=1)
        for variant in _variants(text)
        if _fields(stock.parse(variant)) != _fields(reader.parse(variant))
    ]
    assert differ == []


@pytest.mark.parametrize("folder", ["docs", "tests/golden", "tests/bad_inputs", "sessions"])
def test_the_repository_documents_give_markdown_its_own_tokens(folder):
    stock, reader = _stock(), block_reader()
    documents = sorted((ROOT / folder).rglob("*.md"))
    if not documents:
        pytest.skip(f"no documents under {folder}/")
    for path in documents:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert _fields(stock.parse(text)) == _fields(reader.parse(text)), path


def test_a_line_of_each_kind_starts_its_block():
    lines = [
        "## user",
        "",
        "```bash",
        "echo hi",
        "```",
        "> quoted",
        "- item",
        "1. first",
        "***",
        "<div>",
        "</div>",
        "",
        "[ref]: /url",
        "# title",
        "text",
        "===",
        "    indented code",
    ]
    tokens = block_reader().parse("\n".join(lines))
    opened = [(t.type, t.map) for t in tokens if t.level == 0 and t.nesting != -1]
    assert opened == [
        ("heading_open", [0, 1]),
        ("fence", [2, 5]),
        ("blockquote_open", [5, 6]),
        ("bullet_list_open", [6, 7]),
        ("ordered_list_open", [7, 8]),
        ("hr", [8, 9]),
        ("html_block", [9, 11]),
        ("heading_open", [13, 14]),
        ("heading_open", [14, 16]),
        ("code_block", [16, 17]),
    ]
    found = blocks(lines)
    assert [type(block).__name__ for block in found] == ["Heading", "FencedCode", "Text", "Text"]
    assert found[1].code == "echo hi"
    assert found[2].quoted
