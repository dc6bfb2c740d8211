"""A document means to domarkx what it means to a CommonMark reader, and export keeps it so.

Each case is a document that a reader (GitHub, VS Code) shows one way; the
test checks that domarkx reads it the same way and that its export reads back
as the same snapshot.
"""

from __future__ import annotations

import pytest

from domarkx.data.models import CodeBlock, TextBlock
from domarkx.errors import DocumentError, DomarkxError
from domarkx.parsing.markdown import MarkdownParser, ParsedSession
from domarkx.session.export import render
from tests.support import assert_round_trip, import_text


def parse(text: str) -> ParsedSession:
    return MarkdownParser().parse_text(text, "doc.md")


def test_an_unclosed_fence_runs_to_the_end_of_the_document():
    parsed = parse("## user\n\n```\na\n```python\nb\n\n## assistant\n\nc\n")
    assert len(parsed.messages) == 1
    assert parsed.messages[0].content == [
        CodeBlock(code="a\n```python\nb\n\n## assistant\n\nc"),
    ]


def test_an_unclosed_fence_in_a_list_item_ends_with_the_item():
    parsed = parse("## user\n\n- item\n\n  ```\n  code\n\n## assistant\n\nhi\n")
    assert [m.role for m in parsed.messages] == ["user", "assistant"]
    assert parsed.messages[0].content == [TextBlock(value="- item\n\n  ```\n  code")]


@pytest.mark.parametrize(
    "html",
    [
        "<!--\n```sh\nrm -rf /\n```\n## user\n-->",
        "<div>\n```sh\nrm -rf /\n```\n</div>",
    ],
)
def test_fences_and_role_headings_inside_html_are_text(html):
    parsed = parse(f"## user\n\n{html}\n\nafter\n")
    assert len(parsed.messages) == 1
    assert parsed.messages[0].content == [TextBlock(value=f"{html}\n\nafter")]


def test_a_role_heading_is_read_as_a_reader_shows_it():
    parsed = parse("## &#117;ser\n\nhi\n\nassist&#97;nt\n---\n\nthere\n")
    assert [m.role for m in parsed.messages] == ["user", "assistant"]


def test_an_escaped_role_heading_is_unknown():
    with pytest.raises(DocumentError, match="unknown role heading"):
        parse("## us\\er\n")


def test_escaped_links_and_images_are_not_macros(manager):
    text = "## user\n\n\\[@a](domarkx://date) ![@b](domarkx://date) \\\\[@c](domarkx://nope)\n"
    with pytest.raises(DomarkxError, match="unknown macro 'nope'"):
        import_text(manager, text)
    snapshot = import_text(manager, text.replace("nope", "date"))
    [block] = snapshot.conversation[0].content
    assert block.value.startswith("\\[@a](domarkx://date) ![@b](domarkx://date) \\\\2023-11-14")


@pytest.mark.parametrize("underline", ["===", "--", "  ="])
def test_a_lazy_quote_line_that_would_underline_survives_export(manager, underline):
    snapshot = import_text(manager, f"## user\n\n> foo\nbar\n{underline}\n")
    exported = assert_round_trip(manager, snapshot)
    assert f"> foo\nbar\n{underline}\n" in exported


def test_ordinary_lazy_lines_stay_in_the_quote(manager):
    snapshot = import_text(manager, "## user\n\n> foo\nbar\n")
    assert snapshot.conversation[0].content == [TextBlock(value="foo\nbar", quoted=True)]
    assert "> foo\n> bar\n" in assert_round_trip(manager, snapshot)


@pytest.mark.parametrize("blank_lines", [0, 1, 2])
def test_a_fence_of_blank_lines_keeps_them(manager, blank_lines):
    fence = "```\n" + "\n" * blank_lines + "```"
    snapshot = import_text(manager, f"## user\n\n{fence}\n")
    [block] = snapshot.conversation[0].content
    assert block.code == "\n" * blank_lines
    assert f"\n{fence}\n" in assert_round_trip(manager, snapshot)


# Round trips that used to give another snapshot --------------------------------------


def test_msg_metadata_between_two_paragraphs(manager):
    text = '## assistant\n\nfirst\n\n```json msg-metadata\n{"a": 1}\n```\n\nsecond\n'
    snapshot = import_text(manager, text)
    assert snapshot.conversation[0].content == [TextBlock(value="first\n\nsecond")]
    assert_round_trip(manager, snapshot)


def test_a_macro_formed_by_two_results_stays_literal(manager):
    text = '---\nparams:\n  open: "[@y"\n---\n\n## user\n\n[@o](domarkx://open)](domarkx://date)\n'
    snapshot = import_text(manager, text)
    assert snapshot.conversation[0].content == [TextBlock(value="\\[@y](domarkx://date)")]
    assert_round_trip(manager, snapshot)


def test_an_expansion_ending_in_a_quote_followed_by_a_quote(manager):
    text = '---\nparams:\n  q: "> a"\n---\n\n## user\n\n[@q](domarkx://q)\n\n> b\n'
    snapshot = import_text(manager, text)
    assert snapshot.conversation[0].content == [TextBlock(value="a\n\nb", quoted=True)]
    assert_round_trip(manager, snapshot)


def test_a_preamble_ending_in_an_unclosed_fence(manager):
    text = "```yaml session-config\ntimeout: 5\n```\n\nIntro.\n\n```text\nnever closed\n"
    snapshot = import_text(manager, text)
    assert snapshot.preamble == "Intro.\n\n```text\nnever closed"
    exported = assert_round_trip(manager, snapshot)
    assert exported.index("session-config") < exported.index("Intro.")


def test_a_preamble_macro_expanding_to_nothing(manager):
    text = '---\nparams:\n  e: ""\n---\n\n[@e](domarkx://e)\n\n## user\n\nhi\n'
    snapshot = import_text(manager, text)
    assert snapshot.preamble is None
    assert_round_trip(manager, snapshot)


def test_a_document_starting_with_a_blank_line_then_a_rule(manager):
    snapshot = import_text(manager, "\n---\n\n## user\n\nhi\n")
    assert snapshot.preamble == "---"
    assert render(snapshot).startswith("\n---\n")
    assert_round_trip(manager, snapshot)
