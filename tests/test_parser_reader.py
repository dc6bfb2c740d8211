"""One reader of a message body: a model reply, a document and an included file agree.

A model's reply (``parse_reply``), the same text as a message of a session
document read from a file, the same text included into a message, and the
same text read as a body (``parse_body``) give the same blocks: a fence at
the top level is code; a fence in a list item, a quote or an HTML block is
text, as any CommonMark reader shows it. Macros are left alone in exactly the
code this reader finds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import CodeBlock, TextBlock
from domarkx.data.store import Store
from domarkx.llm.messages import parse_reply
from domarkx.parsing.macro_links import MACRO_PATTERN, escape_macros, find_macros
from domarkx.parsing.markdown import MarkdownParser, config_sources, parse_body
from domarkx.session.snapshot import SnapshotManager

BASH = CodeBlock(language="bash", code="ls")

# (name, text, the code blocks a CommonMark reader finds at the top level)
SHAPES = [
    (
        "fence in a list item",
        "Steps:\n\n1. Run this:\n\n   ```bash\n   ls\n   ```\n\n2. Done.",
        [],
    ),
    ("fence in a list item, no blank line", "- Run:\n  ```bash\n  ls\n  ```", []),
    ("fence in a quote", "> ```bash\n> ls\n> ```", []),
    ("fence in an HTML block", "<div>\n```bash\nls\n```\n</div>", []),
    ("fence in an HTML comment", "<!--\n```bash\nls\n```\n-->\n\nafter", []),
    ("indented code that looks like a fence", "Code:\n\n    ```bash\n    ls\n    ```", []),
    ("paragraph line that looks like a fence", "text\n    ```bash\n    ls\n    ```", []),
    ("top-level fence", "Here:\n\n```bash\nls\n```\n\nDone.", [BASH]),
    ("fence indented by three spaces", "Here:\n   ```bash\n   ls\n   ```", [BASH]),
    ("fence right after a paragraph", "Here:\n```bash\nls\n```", [BASH]),
    ("fence right after a list item", "- item\n```bash\nls\n```", [BASH]),
    (
        "tildes",
        "~~~python name=a.py\nprint('```')\n~~~",
        [CodeBlock(language="python", name="a.py", code="print('```')")],
    ),
    ("unclosed fence", "Try:\n\n```sh\necho hi\n", [CodeBlock(language="sh", code="echo hi")]),
    ("unclosed fence in a list item", "- a\n\n  ```sh\n  echo hi\n\nafter", []),
    (
        "nested fences",
        "````markdown\n```bash\nls\n```\n````",
        [CodeBlock(language="markdown", code="```bash\nls\n```")],
    ),
    (
        "a list fence between two top-level fences",
        "```bash\nls\n```\n\n- also:\n\n  ```bash\n  rm -rf /\n  ```\n\n```bash\nls\n```",
        [BASH, BASH],
    ),
]


def kinds(blocks: Sequence[object]) -> list[str]:
    return [type(block).__name__ for block in blocks]


def codes(blocks: Sequence[object]) -> list[CodeBlock]:
    return [block for block in blocks if isinstance(block, CodeBlock)]


def from_document(tmp_path: Path, text: str) -> list[object]:
    path = tmp_path / "doc.md"
    # The same text: a final newline is added only where the text has none.
    path.write_text(f"## assistant\n\n{text.removesuffix(chr(10))}\n", encoding="utf-8")
    [message] = MarkdownParser().parse_file(path).messages
    return list(message.content)


def from_include(project, text: str) -> list[object]:
    root = project(
        {
            "sessions/part.md": text + "\n",
            "sessions/main.md": "## assistant\n\n[@p](domarkx://include?path=part.md)\n",
        }
    )
    manager = SnapshotManager(Store(root / ".domarkx", root))
    [message] = manager.import_file(root / "sessions" / "main.md").snapshot.conversation
    return list(message.content)


@pytest.mark.parametrize(("text", "expected"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_a_reply_a_document_a_body_and_an_include_give_the_same_blocks(
    project, tmp_path, text, expected
):
    reply = parse_reply(text)
    body = [block for block, _ in parse_body(text, "part.md")]
    document = from_document(tmp_path, text)
    included = from_include(project, text)
    assert codes(reply) == expected
    for other in (body, document, included):
        assert kinds(other) == kinds(reply)
        assert codes(other) == expected
    # Text outside a quote is read the same too (a reply keeps quote markers in its
    # text: the export quotes it once more).
    if not text.startswith(">"):
        texts = [b.value for b in reply if isinstance(b, TextBlock)]
        assert [b.value for b in document if isinstance(b, TextBlock)] == texts


LINES = st.sampled_from(
    [
        *["", "Some text.", "# Title", "> quoted", "- item", "1. step", "<!--", "-->", "<div>"],
        *["```", "```bash", "```python name=x.py run", "~~~", "````", "~~~sh", "   ```"],
        *["  ```sh", "    ```", "  - nested", "> ```bash", "> ls", "   indented", "\tx"],
        *["echo hi", "    echo hi", "</div>", "***"],
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.lists(LINES, max_size=14).map("\n".join))
def test_any_text_gives_the_same_code_as_a_reply_a_body_and_a_message(tmp_path, text):
    reply = parse_reply(text)
    body = [block for block, _ in parse_body(text, "part.md")]
    assert codes(body) == codes(reply)
    assert codes(from_document(tmp_path, text)) == codes(reply)


# Macros stay literal in the code this reader finds, and nowhere else.

MACRO = "[@m](domarkx://set?value=X)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Code: a fence in a list item, in a quote, an indented block, an unclosed fence.
        (f"- item\n\n  ```sh\n  {MACRO}\n  ```", f"- item\n\n  ```sh\n  {MACRO}\n  ```"),
        (f"> ~~~\n> {MACRO}\n> ~~~", f"~~~\n{MACRO}\n~~~"),
        (f"Code:\n\n    {MACRO}", f"Code:\n\n    {MACRO}"),
        (f"- a\n\n  ```\n  {MACRO}", f"- a\n\n  ```\n  {MACRO}"),
        # Not code: four spaces that continue a paragraph or a list item's paragraph,
        # and a "fence" indented four spaces after a paragraph.
        (f"text\n    {MACRO}", "text\n    X"),
        (f"- item\n\n    {MACRO}", "- item\n\n    X"),
        (f"text\n    ~~~\n    {MACRO}\n    ~~~", "text\n    ~~~\n    X\n    ~~~"),
        # Backticks over lines of one paragraph are a code span, not a fence.
        (f"text\n    ```\n    {MACRO}\n    ```", f"text\n    ```\n    {MACRO}\n    ```"),
    ],
)
def test_macros_expand_outside_the_code_the_reader_finds(project, text, expected):
    root = project({"sessions/main.md": f"## user\n\n{text}\n"})
    manager = SnapshotManager(Store(root / ".domarkx", root))
    [message] = manager.import_file(root / "sessions" / "main.md").snapshot.conversation
    [block] = message.content
    assert isinstance(block, TextBlock) and block.value == expected


def test_a_reply_escapes_only_the_macros_that_would_expand():
    reply = f"See {MACRO}.\n\nCode:\n\n    {MACRO}\n\n- in a list:\n\n  ```\n  {MACRO}\n  ```"
    [text] = parse_reply(reply)
    assert isinstance(text, TextBlock)
    assert text.value == reply.replace(f"See {MACRO}", f"See \\{MACRO}")


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [
                *["[@", "[@a]", "](", "(domarkx://", "domarkx://x", ")", "[k](v)", "[", "]"],
                *[" ", "\n", "x", "\\", "!", "[@a](domarkx://set?value=1)", "[@a](domarkx://"],
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_the_linear_macro_scan_finds_what_the_pattern_finds(text):
    expected = [
        (m.span(), m.group("text"), m.group("url"), m.group("extra"))
        for m in MACRO_PATTERN.finditer(text)
    ]
    found = [
        ((m.start(), m.end()), m.group("text"), m.group("url"), m.group("extra"))
        for m in find_macros(text)
    ]
    assert found == expected
    assert [m.group(0) for m in find_macros(text)] == [
        m.group(0) for m in MACRO_PATTERN.finditer(text)
    ]


def test_escaping_many_macros_keeps_every_one_literal():
    text = " ".join([MACRO] * 2000)
    escaped = escape_macros(text)
    assert escaped == " ".join([f"\\{MACRO}"] * 2000)
    assert len(re.findall(re.escape("\\" + MACRO), escaped)) == 2000


# The session-config is found as the parser finds it.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "```yaml session-config\nmodel: {provider: scripted}\n```\n\n## user\n\nhi\n",
            ["model: {provider: scripted}"],
        ),
        ("---\na: 1\n---\n\n```yaml session-config\nengine: docker\n```\n", ["engine: docker"]),
        ("> ```yaml session-config\n> model: x\n> ```\n", []),
        ("- a\n\n  ```yaml session-config\n  model: x\n  ```\n", []),
        ("## user\n\n```yaml session-config\nmodel: x\n```\n", []),
        (
            "```\n## user\n```\n\n```yaml session-config\nmodel: {name: m}\n```\n",
            ["model: {name: m}"],
        ),
        ("user\n---\n\n```yaml session-config\nmodel: x\n```\n", []),
        ("---\nnot closed\n\n```yaml session-config\nmodel: x\n```\n", []),
    ],
)
def test_the_session_config_is_found_as_the_parser_finds_it(text, expected):
    assert config_sources(text) == expected
    try:
        parsed = MarkdownParser().parse_text(text, "doc.md")
    except Exception:
        assert expected == []
        return
    config = parsed.execution_config
    assert (config is not None) == bool(expected)
