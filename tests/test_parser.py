"""The session document parser (spec section 1), in process: structure, text kept verbatim, lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from domarkx.data.models import CodeBlock, OutputBlock, TextBlock
from domarkx.errors import DocumentError
from domarkx.parsing.fences import format_info, parse_info
from domarkx.parsing.markdown import (
    MarkdownParser,
    ParsedSession,
    parse_body,
)


def parse(text: str) -> ParsedSession:
    text = textwrap.dedent(text)
    return MarkdownParser().parse_text(text[1:] if text.startswith("\n") else text, "doc.md")


def parse_error(text: str) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        parse(text)
    return info.value


SPEC_EXAMPLE = """
---
title: "List files"
author: ana
---

```yaml session-config
engine: local_shell
timeout: 30
```

```python setup-script
import os
GREETING = "hi"
```

## system

> You are a careful shell assistant.

## user

> What is in [@dir](domarkx://set?value=/tmp) ?

## assistant

> Here is the listing:

```bash name=ls.sh
ls -la /tmp
```
"""


def test_the_spec_example():
    parsed = parse(SPEC_EXAMPLE)
    assert parsed.front_matter == {"title": "List files", "author": "ana"}
    assert parsed.execution_config == {"engine": "local_shell", "timeout": 30}
    assert parsed.config_format == "yaml"
    assert parsed.config_line == 6
    assert parsed.setup_script is not None
    assert parsed.setup_script.language == "python"
    assert parsed.setup_script.code == 'import os\nGREETING = "hi"'
    assert parsed.preamble is None
    assert [m.role for m in parsed.messages] == ["system", "user", "assistant"]
    assert parsed.message_lines == [16, 20, 24]
    system, user, assistant = parsed.messages
    assert system.content == [TextBlock(value="You are a careful shell assistant.", quoted=True)]
    # Macros are not the parser's business: the link is kept as written.
    assert user.content[0].value == "What is in [@dir](domarkx://set?value=/tmp) ?"
    assert assistant.content == [
        TextBlock(value="Here is the listing:", quoted=True),
        CodeBlock(language="bash", name="ls.sh", code="ls -la /tmp"),
    ]
    assert parsed.block_lines == [[18], [22], [26, 28]]


# Front matter -------------------------------------------------------------------


def test_front_matter_is_user_metadata_with_yaml_dates_as_strings():
    parsed = parse(
        """
        ---
        title: T
        when: 2024-05-01
        tags: [a, b]
        1: one
        ---
        ## user
        hi
        """
    )
    assert parsed.front_matter == {
        "title": "T",
        "when": "2024-05-01",
        "tags": ["a", "b"],
        "1": "one",
    }


def test_front_matter_may_end_with_dots_and_may_be_empty():
    assert parse("---\na: 1\n...\n## user\nx\n").front_matter == {"a": 1}
    assert parse("---\n---\n## user\nx\n").front_matter == {}


def test_a_rule_later_in_the_document_is_not_front_matter():
    parsed = parse("# T\n\n---\n\na: 1\n\n---\n\n## user\nx\n")
    assert parsed.front_matter == {}
    assert parsed.preamble == "# T\n\n---\n\na: 1\n\n---"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("---\ntitle: [unclosed\n---\n## user\nx\n", 3, "invalid YAML in front matter"),
        ("---\n- a\n- b\n---\n## user\nx\n", 2, "must be a YAML mapping"),
        ("---\njust text\n---\n", 2, "must be a YAML mapping"),
        ("---\na: 1\n## user\nx\n", 1, "not closed"),
    ],
)
def test_bad_front_matter(text, line, words):
    err = parse_error(text)
    assert words in err.message
    assert (err.file, err.line) == ("doc.md", line)


# Document blocks ----------------------------------------------------------------


def test_json_session_config_keeps_unknown_keys_and_its_format():
    parsed = parse(
        """
        ```json session-config
        {"type": "AutoGenSession", "version": "0.1", "llm_context": {"model": "x"}, "timeout": 5}
        ```

        ## user
        x
        """
    )
    assert parsed.config_format == "json"
    assert parsed.execution_config == {
        "type": "AutoGenSession",
        "version": "0.1",
        "llm_context": {"model": "x"},
        "timeout": 5,
    }


def test_empty_yaml_session_config_is_an_empty_mapping():
    assert parse("```yaml session-config\n```\n\n## user\nx\n").execution_config == {}


def test_setup_script_of_any_language():
    parsed = parse("```bash setup-script\nexport A=1\ncd /tmp\n```\n\n## user\nx\n")
    assert parsed.setup_script is not None
    assert (parsed.setup_script.language, parsed.setup_script.code) == (
        "bash",
        "export A=1\ncd /tmp",
    )


def test_preamble_is_everything_else_before_the_first_role_verbatim():
    parsed = parse(
        """
        # A title

        Some *prose*  with two spaces,
        and a [link](https://example.org).

        ```yaml session-config
        engine: local_shell
        ```

        | a | b |
        |---|---|
        | 1 | 2 |

        ```text
        an ordinary block stays in the preamble
        ```

        ## user
        x
        """
    )
    assert parsed.preamble == (
        "# A title\n\nSome *prose*  with two spaces,\nand a [link](https://example.org).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```text\nan ordinary block stays in the preamble\n```"
    )
    assert parsed.preamble_line == 1
    assert parsed.execution_config == {"engine": "local_shell"}


def test_link_reference_definitions_are_kept_where_they_stand():
    # A CommonMark parser gives them no token; the lines must not fall between the cracks.
    parsed = parse("[a]: https://example.org\n\n## user\n\n[b]: https://b.org\n\nsee [a] and [b]\n")
    assert parsed.preamble == "[a]: https://example.org"
    assert parsed.messages[0].content == [TextBlock(value="[b]: https://b.org\n\nsee [a] and [b]")]
    only = parse("---\nx: 1\n---\n[a]: https://example.org\n")
    assert (only.front_matter, only.preamble) == ({"x": 1}, "[a]: https://example.org")


def test_a_document_without_messages():
    parsed = parse("---\na: 1\n---\n\n# Only a title\n")
    assert parsed.messages == []
    assert parsed.preamble == "# Only a title"
    assert parsed.preamble_line == 5


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "```yaml session-config\na: 1\n```\n\n```json session-config\n{}\n```\n",
            5,
            "second session-config",
        ),
        ("```yaml session-config\na: 1\nb: [\n```\n", 4, "invalid YAML in session-config"),
        ('```json session-config\n{\n  "a": 1,\n}\n```\n', 4, "invalid JSON in session-config"),
        ("```yaml session-config\n- 1\n```\n", 1, "must be a mapping"),
        ("```yaml session-config\ntimeout: -1\n```\n", 1, "timeout"),
        ("```sh setup-script\na\n```\n\n```sh setup-script\nb\n```\n", 5, "second setup-script"),
        ("## user\n\n```yaml session-config\na: 1\n```\n", 3, "inside a message"),
    ],
)
def test_bad_document_blocks(text, line, words):
    err = parse_error(text)
    assert words in err.message
    assert err.line == line


# Messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "role"),
    [
        ("system", "system"),
        ("System", "system"),
        ("system_message", "system"),
        ("SYSTEM_MESSAGE", "system"),
        ("user", "user"),
        ("User", "user"),
        ("ASSISTANT", "assistant"),
        ("Assistant", "assistant"),
        ("tool", "tool"),
        ("Tool", "tool"),
        ("user ##", "user"),
    ],
)
def test_role_headings_in_any_case(heading, role):
    assert parse(f"## {heading}\n\nx\n").messages[0].role == role


def test_a_setext_heading_is_a_role_heading():
    parsed = parse("user\n----\n\nhi\n")
    assert [m.role for m in parsed.messages] == ["user"]
    assert parsed.messages[0].content == [TextBlock(value="hi")]


def test_unknown_role_heading_lists_the_valid_roles():
    err = parse_error("## user\nx\n\n## Narrator\n\nhi\n")
    assert err.line == 4
    assert "## Narrator" in err.message
    assert err.hint is not None
    for role in ("system", "system_message", "user", "assistant", "tool"):
        assert role in err.hint


def test_text_before_a_rule_would_be_a_setext_heading():
    # "Thanks\n---" is a level-2 heading in CommonMark; the error says how to avoid it.
    err = parse_error("## user\n\nThanks\n---\n")
    assert err.line == 3
    assert err.hint is not None and "---" in err.hint


def test_deeper_headings_are_content():
    parsed = parse("## user\n\n### Step 1\n\ntext\n\n# Big\n")
    assert len(parsed.messages) == 1
    assert parsed.messages[0].content == [TextBlock(value="### Step 1\n\ntext\n\n# Big")]


def test_empty_messages():
    parsed = parse("## user\n## assistant\n\n## tool\n")
    assert [(m.role, m.content) for m in parsed.messages] == [
        ("user", []),
        ("assistant", []),
        ("tool", []),
    ]


def test_text_is_kept_verbatim():
    body = (
        'Some *emphasis*, `inline code`, a [link](https://example.org "t") and <b>html</b>.  \n'
        "A hard break above; trailing spaces kept.\n"
        "\n"
        "- a list\n"
        "  - nested\n"
        "1. numbered\n"
        "\n"
        "| col | other |\n"
        "|:----|------:|\n"
        "| `x` | [y](z) |\n"
        "\n"
        "\n"
        "\n"
        "Three blank lines above are kept too.\n"
        "\n"
        "    indented code is text"
    )
    parsed = parse("## user\n\n" + body + "\n\n\n")
    assert parsed.messages[0].content == [TextBlock(value=body)]


def test_quoted_text_loses_its_markers():
    parsed = parse(
        """
        ## user

        > First line
        > second line
        >
        > ### A heading
        >
        > - item
        >> nested quote
        > lazy continuation follows
        lazy
        """
    )
    assert parsed.messages[0].content == [
        TextBlock(
            value="First line\nsecond line\n\n### A heading\n\n- item\n> nested quote\n"
            "lazy continuation follows\nlazy",
            quoted=True,
        )
    ]


def test_quoted_and_plain_text_alternate():
    parsed = parse("## user\n\n> q1\n\n> q2\n\nplain\n\n> q3\n")
    assert parsed.messages[0].content == [
        TextBlock(value="q1\n\nq2", quoted=True),
        TextBlock(value="plain"),
        TextBlock(value="q3", quoted=True),
    ]
    assert parsed.block_lines == [[3, 7, 9]]


def test_a_fence_inside_a_quote_is_text():
    parsed = parse("## user\n\n> ```bash\n> ls\n> ```\n")
    assert parsed.messages[0].content == [TextBlock(value="```bash\nls\n```", quoted=True)]


def test_code_blocks_with_names_attributes_and_flags():
    parsed = parse(
        """
        ## assistant

        ```bash name=ls.sh timeout=5 norun
        ls
        ```

        ```python name="my script.py" cwd='/tmp/a b' run
        print(1)
        ```

        ```
        no language
        ```
        """
    )
    assert parsed.messages[0].content == [
        CodeBlock(
            language="bash", name="ls.sh", code="ls", attrs={"timeout": "5"}, flags=["norun"]
        ),
        CodeBlock(
            language="python",
            name="my script.py",
            code="print(1)",
            attrs={"cwd": "/tmp/a b"},
            flags=["run"],
        ),
        CodeBlock(language="", code="no language"),
    ]
    assert parsed.block_lines == [[3, 7, 11]]


def test_fences_longer_than_the_backticks_inside_and_tilde_fences():
    parsed = parse(
        """
        ## assistant

        ````markdown
        ```bash
        ls
        ```
        ## user (not a heading: inside a fence)
        ````

        ~~~bash name=`odd`
        echo '~~'
        ~~~
        """
    )
    first, second = parsed.messages[0].content
    assert isinstance(first, CodeBlock) and isinstance(second, CodeBlock)
    assert first.code == "```bash\nls\n```\n## user (not a heading: inside a fence)"
    assert (second.name, second.code) == ("`odd`", "echo '~~'")


def test_code_keeps_blank_lines_and_an_unclosed_fence_runs_to_the_end():
    parsed = parse("## assistant\n\n```python\ndef f():\n    pass\n\n\n\ndef g():\n    pass\n\n")
    block = parsed.messages[0].content[0]
    assert isinstance(block, CodeBlock)
    assert block.code == "def f():\n    pass\n\n\n\ndef g():\n    pass\n"


def test_msg_metadata_is_not_a_content_block():
    parsed = parse(
        """
        ## assistant

        > Calling a tool.

        ```json msg-metadata
        {"content": [{"id": "call_1", "name": "ls", "arguments": "{\\"path\\": \\"/\\"}"}]}
        ```

        ## tool

        ```yaml msg-metadata
        content:
          - call_id: call_1
            content: a b
        ```

        a b
        """
    )
    assistant, tool = parsed.messages
    assert assistant.message_metadata == {
        "content": [{"id": "call_1", "name": "ls", "arguments": '{"path": "/"}'}]
    }
    assert assistant.content == [TextBlock(value="Calling a tool.", quoted=True)]
    assert tool.message_metadata == {"content": [{"call_id": "call_1", "content": "a b"}]}
    assert tool.content == [TextBlock(value="a b")]


def test_an_empty_yaml_msg_metadata_is_an_empty_mapping():
    assert parse("## user\n\n```yaml msg-metadata\n```\n").messages[0].message_metadata == {}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("## user\n\n```json msg-metadata\n{\n  1\n}\n```\n", 5, "invalid JSON in msg-metadata"),
        ("## user\n\n```yaml msg-metadata\na: [\n```\n", 5, "invalid YAML in msg-metadata"),
        ("## user\n\n```json msg-metadata\n[1]\n```\n", 3, "must be a mapping"),
        (
            "## user\n\n```json msg-metadata\n{}\n```\n\n```json msg-metadata\n{}\n```\n",
            7,
            "second msg-metadata",
        ),
    ],
)
def test_bad_msg_metadata(text, line, words):
    err = parse_error(text)
    assert words in err.message
    assert err.line == line


def test_output_blocks_follow_their_code_block():
    parsed = parse(
        """
        ## assistant

        ```bash
        echo hi; echo oops >&2; exit 3
        ```

        ```text output exit_code=3
        hi
        ```

        ```text output stream=stderr
        oops
        ```

        ```bash
        sleep 100
        ```

        ```text output exit_code=137 timed_out
        ```

        ```json output exit_code=0 shown=yes extra
        {}
        ```
        """
    )
    content = parsed.messages[0].content
    assert [block.type for block in content] == [
        "code",
        "output",
        "output",
        "code",
        "output",
        "output",
    ]
    assert content[1] == OutputBlock(stream="stdout", text="hi", exit_code=3)
    assert content[2] == OutputBlock(stream="stderr", text="oops")
    assert content[4] == OutputBlock(text="", exit_code=137, timed_out=True)
    assert content[5] == OutputBlock(
        text="{}", language="json", exit_code=0, attrs={"shown": "yes", "flags": "extra"}
    )


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("## user\n\n```text output\nhi\n```\n", 3, "follows no code block"),
        ("## user\n\nsay\n\n```text output\nhi\n```\n", 5, "follows no code block"),
        ("## user\n\n```sh\nx\n```\n\n```text output exit_code=x\n```\n", 7, "exit_code"),
        ("## user\n\n```sh\nx\n```\n\n```text output stream=both\n```\n", 7, "stream"),
    ],
)
def test_bad_output_blocks(text, line, words):
    err = parse_error(text)
    assert words in err.message
    assert err.line == line


# Files: encodings and line endings ------------------------------------------------


def test_crlf_and_a_byte_order_mark_read_like_plain_lf(tmp_path: Path):
    lf = "---\na: 1\n---\n\n## user\n\n> hi\n\n```bash\nls\n```\n"
    plain = tmp_path / "lf.md"
    plain.write_bytes(lf.encode())
    crlf = tmp_path / "crlf.md"
    crlf.write_bytes(b"\xef\xbb\xbf" + lf.replace("\n", "\r\n").encode())
    parser = MarkdownParser()
    first = parser.parse_file(plain, "x.md").model_dump(exclude={"source_path"})
    second = parser.parse_file(crlf, "x.md").model_dump(exclude={"source_path"})
    assert first == second


@pytest.mark.parametrize("odd", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
def test_characters_that_str_splitlines_breaks_at_are_not_line_ends(odd):
    parsed = parse(f"## user\n\nbefore{odd}after\n\n## assistant\n\n```bash\necho '{odd}'\n```\n")
    assert parsed.message_lines == [1, 5]
    assert parsed.messages[0].content == [TextBlock(value=f"before{odd}after")]
    assert parsed.messages[1].content == [CodeBlock(language="bash", code=f"echo '{odd}'")]


def test_not_utf8_names_the_line_of_the_first_bad_byte(tmp_path: Path):
    path = tmp_path / "latin1.md"
    path.write_bytes("## user\n\nok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DocumentError) as info:
        MarkdownParser().parse_file(path, "latin1.md")
    assert (info.value.file, info.value.line) == ("latin1.md", 4)
    assert "UTF-8" in info.value.message


def test_a_missing_file(tmp_path: Path):
    with pytest.raises(DocumentError) as info:
        MarkdownParser().parse_file(tmp_path / "nope.md", "nope.md")
    assert info.value.file == "nope.md"
    assert "no such file" in info.value.message


# Info strings and message bodies ----------------------------------------------------


@pytest.mark.parametrize(
    ("info", "language", "attrs", "flags"),
    [
        ("bash", "bash", {}, []),
        ("bash name=ls.sh norun", "bash", {"name": "ls.sh"}, ["norun"]),
        ("python name='a b.py' x=1 run", "python", {"name": "a b.py", "x": "1"}, ["run"]),
        ('sh name="it\'s" k=', "sh", {"name": "it's", "k": ""}, []),
        ("text output exit_code=0", "text", {"exit_code": "0"}, ["output"]),
        ("sh 'two words' '' k=v", "sh", {"k": "v"}, ["two words", ""]),
        ("'my lang' 'odd key'=v =x 'a=b'", "my lang", {"odd key": "v"}, ["=x", "a=b"]),
        ("c\\+\\+ it's", "c\\+\\+", {}, ["it's"]),
        ("'' name=n", "", {"name": "n"}, []),
        ("", "", {}, []),
    ],
)
def test_info_strings(info, language, attrs, flags):
    parsed = parse_info(info)
    name = attrs.pop("name", None)
    assert (parsed.language, parsed.name, parsed.attrs, parsed.flags) == (
        language,
        name,
        attrs,
        flags,
    )
    again = parse_info(format_info(language, attrs, flags, name=name))
    assert (again.language, again.name, again.attrs, again.flags) == (language, name, attrs, flags)


def test_parse_body_reads_blocks_of_included_or_generated_text():
    blocks = parse_body(
        "Some text\n\n```bash name=x\nls\n```\n\n> quoted", "part.md", first_line=10
    )
    assert blocks == [
        (TextBlock(value="Some text"), 10),
        (CodeBlock(language="bash", name="x", code="ls"), 12),
        (TextBlock(value="quoted", quoted=True), 16),
    ]


def test_parse_body_rejects_role_headings():
    with pytest.raises(DocumentError) as info:
        parse_body("text\n\n## assistant\n\nmore", "part.md", first_line=5)
    assert info.value.line == 7
    assert "role heading" in info.value.message
