"""Fences and info strings (spec section 4.2): one reader and writer for the whole package."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import CodeBlock, Message, OutputBlock, TextBlock
from domarkx.llm.messages import parse_reply, render_code
from domarkx.parsing.fences import (
    fence_end,
    format_info,
    open_fence,
    parse_info,
    write_fence,
)
from domarkx.parsing.markdown import MarkdownParser, parse_body
from domarkx.session.export import render
from tests.support import import_text

# Text of one line: anything but the line ends the parser reads ("\n"; "\r" becomes "\n").
WORD = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]))
# Text of several lines, with runs of fence characters and indents among them.
TEXT = st.lists(
    st.one_of(WORD, st.sampled_from(["```", "~~~", "````", "   ```", "``` x", "~~~~~~", "", "\t"])),
    max_size=8,
).map("\n".join)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("```", ("`", 3, 0, "")),
        ("   ~~~~ python name=x ", ("~", 4, 3, "python name=x")),
        ("``` a`b", None),
        ("~~~ a`b", ("~", 3, 0, "a`b")),
        ("    ```", None),
        ("``", None),
        ("\t```", None),
    ],
)
def test_opening_fences(line, expected):
    fence = open_fence(line)
    got = None if fence is None else (fence.char, fence.size, fence.indent, fence.info)
    assert got == expected


def test_closing_fences_and_an_unclosed_fence_runs_to_the_end():
    lines = ["````x", "```", "~~~~", "   ````` \t", "after"]
    assert fence_end(lines, 0) == 4
    assert fence_end(["```", "a", "``` x", "b"], 0) == 4  # `` ``` x `` closes nothing
    assert fence_end(["```", "a", "    ```"], 0) == 3  # indented four: content
    assert fence_end(["```", "a", "```", "b"], 0, stop=2) == 2  # the container ends first


@settings(max_examples=300, deadline=None)
@given(
    language=WORD,
    name=st.none() | WORD,
    attrs=st.dictionaries(WORD.filter(bool), WORD, max_size=3),
    flags=st.lists(WORD, max_size=3),
)
def test_info_strings_read_back_as_written(language, name, attrs, flags):
    attrs.pop("name", None)
    info = format_info(language, attrs, flags, name=name)
    parsed = parse_info(info)
    assert (parsed.language, parsed.name, parsed.attrs, parsed.flags) == (
        language,
        name,
        attrs,
        flags,
    )
    # Written into a fence line, the info string is read back from the document too.
    fence = open_fence(write_fence("", info).split("\n", 1)[0])
    assert fence is not None and fence.info == info


@pytest.mark.parametrize(
    ("info", "written"),
    [
        ("python name=a.py", "python name=a.py"),
        ("sh name='it'\"'\"'s'", "sh name='it'\"'\"'s'"),
        ('sh name="a b"', "sh name='a b'"),
        ("'' setup-script", "'' setup-script"),
        ("x 'a=b'", "x 'a=b'"),
        ("it's", "it's"),  # the language as a reader shows it
        ("c++ it's", "c++ 'it'\"'\"'s'"),
        ("foo\\+bar", "foo\\+bar"),
    ],
)
def test_info_strings_are_quoted_only_where_needed(info, written):
    parsed = parse_info(info)
    again = format_info(parsed.language, parsed.attrs, parsed.flags, name=parsed.name)
    assert again == written


@settings(max_examples=300, deadline=None)
@given(text=TEXT, info=st.sampled_from(["", "python", "a`b", "sh name='x y'"]))
def test_any_text_reads_back_from_its_fence(text, info):
    """Whatever fences or backticks the text holds, its fence holds it whole."""
    block = write_fence(text, info)
    lines = block.split("\n")
    assert fence_end(lines, 0) == len(lines)
    # A message body (an include, a model reply) and a whole document read it the same.
    [(code, _)] = parse_body(block, "doc.md")
    assert isinstance(code, CodeBlock) and code.code == text
    parsed = MarkdownParser().parse_text(f"## user\n\n{block}\n", "doc.md")
    [only] = parsed.messages[0].content
    assert isinstance(only, CodeBlock) and only.code == text


@settings(max_examples=200, deadline=None)
@given(text=TEXT, language=WORD.filter(lambda w: w.strip(" \t") == w and "`" not in w))
def test_code_shown_to_the_model_reads_back_as_the_same_block(text, language):
    block = CodeBlock(language=language, code=text, attrs={"k": "v w"}, flags=["run"])
    assert parse_reply(render_code(block)) == [block]


@pytest.mark.parametrize("flag", ["output", "msg-metadata", "session-config", "setup-script"])
def test_a_reply_quoting_a_domarkx_block_exports_to_the_same_conversation(manager, flag):
    reply = (
        "Here is what it printed:\n\n"
        f"```text {flag}\nhello\n```\n\n"
        "And the code:\n\n```python\nprint('hello')\n```"
    )
    snapshot = import_text(manager, "## user\n\nRun it.\n")
    blocks = parse_reply(reply)
    # The quoted block stays part of the reply's text; the real code is a code block.
    assert [type(b) for b in blocks] == [TextBlock, CodeBlock]
    assert f"```text {flag}\nhello\n```" in blocks[0].value
    conversation = [*snapshot.conversation, Message(role="assistant", content=[*blocks])]
    exported = render(snapshot, conversation)
    again = import_text(manager, exported, "exported")
    assert again.conversation == conversation
    assert render(again) == exported


REPLY_LINES = st.sampled_from(
    [
        *["", "Some text.", "## user", "# Title", "---", "===", "> quoted", "- item", "<!--"],
        *["```", "```bash", "```python name=x.py run", "~~~", "````", "```text output"],
        *["```json msg-metadata", "```yaml session-config", "  ```sh", "    ```", "-->"],
        *["[@x](domarkx://date)", "<div>", "tab\there", "a\rb", "caf\u00e9", "   indented"],
        *["  [@x](domarkx://date)", "    [@x](domarkx://date)", "- [@x](domarkx://date)"],
        *["1. step", "   ```bash", "> ```", "    ~~~"],
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(reply=st.lists(REPLY_LINES, max_size=16).map("\n".join))
def test_any_reply_exports_to_the_same_conversation(manager, reply):
    snapshot = import_text(manager, "## user\n\nGo.\n")
    conversation = [
        *snapshot.conversation,
        Message(role="assistant", content=[*parse_reply(reply)]),
    ]
    exported = render(snapshot, conversation)
    again = import_text(manager, exported, "exported")
    assert again.conversation == conversation, exported
    assert render(again) == exported


def test_an_output_block_keeps_a_name_attribute_among_its_attributes():
    parsed = MarkdownParser().parse_text(
        "## user\n\n```sh\nls\n```\n\n```text output name=n exit_code=0\nx\n```\n", "doc.md"
    )
    output = parsed.messages[0].content[1]
    assert isinstance(output, OutputBlock) and output.attrs == {"name": "n"}


def test_a_setup_script_without_a_language_keeps_its_place(manager):
    snapshot = import_text(manager, "```'' setup-script\ntrue\n```\n\n## user\n\nhi\n")
    assert snapshot.setup_script is not None and snapshot.setup_script.language == ""
    exported = render(snapshot)
    assert exported.startswith("```'' setup-script\n")
    assert import_text(manager, exported, "again").snapshot_id == snapshot.snapshot_id
