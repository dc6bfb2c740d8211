"""Round trips (spec section 5): golden files, then generated documents.

For a snapshot S: import(export(S)) has S's id, and exporting that again gives
the same bytes. Golden files pin what the export looks like
(``tests/golden/<case>.in.md`` -> ``<case>.out.md``; set
``DOMARKX_UPDATE_GOLDEN=1`` to rewrite the expected files, then read the diff).
Hypothesis writes documents with every construct of the format.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import CodeBlock, OutputBlock, TextBlock
from domarkx.session.export import render
from tests.support import assert_round_trip, import_text

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(path.name.removesuffix(".in.md") for path in GOLDEN.glob("*.in.md"))
# Golden files -----------------------------------------------------------------------


def test_every_golden_input_has_its_expected_export():
    assert CASES
    for case in CASES:
        assert (GOLDEN / f"{case}.out.md").is_file(), f"{case}.out.md is missing"


@pytest.mark.parametrize("case", CASES)
def test_golden(case, manager):
    snapshot = import_text(manager, (GOLDEN / f"{case}.in.md").read_text(encoding="utf-8"))
    exported = assert_round_trip(manager, snapshot)
    expected = GOLDEN / f"{case}.out.md"
    if os.environ.get("DOMARKX_UPDATE_GOLDEN"):
        expected.write_bytes(exported.encode("utf-8"))
    assert exported == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES)
def test_an_expected_export_is_its_own_export(case, manager):
    expected = (GOLDEN / f"{case}.out.md").read_text(encoding="utf-8")
    assert render(import_text(manager, expected)) == expected


def test_the_legacy_golden_keeps_everything(manager):
    snapshot = import_text(manager, (GOLDEN / "legacy.in.md").read_text(encoding="utf-8"))
    assert snapshot.config_format == "json"
    config = snapshot.content_dict()["execution_config"]
    assert config == {"type": "AssistantAgentState", "version": "1.0.0", "llm_context": {}}
    assert snapshot.setup_script is not None and "class OpenAIChatCompletionClient" in (
        snapshot.setup_script.code
    )
    assert [m.role for m in snapshot.conversation] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assistant, tool = snapshot.conversation[2], snapshot.conversation[3]
    assert assistant.message_metadata is not None
    assert assistant.message_metadata["content"][0] == {
        "id": "call_0",
        "name": "list_files",
        "arguments": '{"path": "."}',
    }
    assert tool.message_metadata is not None
    assert tool.message_metadata["content"][0]["call_id"] == "call_0"
    assert all(
        block.quoted for m in snapshot.conversation for block in m.content if block.type == "text"
    )


def test_whole_number_settings_are_written_as_written(manager):
    snapshot = import_text(
        manager,
        "```yaml session-config\ntimeout: 30\ncpus: 1.5\nmodel: {provider: scripted, temperature: 0}\n"
        "other: 2.0\n```\n",
    )
    exported = assert_round_trip(manager, snapshot)
    assert "timeout: 30\n" in exported
    assert "cpus: 1.5\n" in exported
    assert "temperature: 0\n" in exported
    assert "other: 2.0\n" in exported  # a key domarkx does not know is kept exactly


def test_blank_lines_inside_code_and_text_survive(manager):
    snapshot = import_text(
        manager, "## user\n\npara\n\n\n\npara\n\n```python\ndef f():\n    pass\n\n\n\nf()\n```\n"
    )
    exported = assert_round_trip(manager, snapshot)
    assert "para\n\n\n\npara" in exported
    assert "pass\n\n\n\nf()" in exported


def test_crlf_and_lf_documents_are_the_same_snapshot(manager):
    lf = (GOLDEN / "text.in.md").read_text(encoding="utf-8")
    crlf = "\ufeff" + lf.replace("\n", "\r\n")
    assert import_text(manager, lf).snapshot_id == import_text(manager, crlf).snapshot_id


def test_expanded_macros_round_trip_as_their_results(manager):
    snapshot = import_text(
        manager,
        "---\nparams: {who: ana}\n---\n\n## user\n\nHi [@w](domarkx://who), "
        "[@s](domarkx://set?value=%60code%60) and [@d](domarkx://date)\n",
    )
    exported = assert_round_trip(manager, snapshot)
    assert "Hi ana, `code` and 2023-11-14\n" in exported
    assert "domarkx://" not in exported.split("---", 2)[2]


# Generated documents ------------------------------------------------------------------

PLAIN = string.ascii_letters + string.digits
# A sentence starts with a plain word, so that no line of text can turn into a
# heading, a list, a quote or a fence by accident; the rest may be anything.
first_words = st.text(PLAIN, min_size=1, max_size=8)
any_characters = st.characters(codec="utf-8", exclude_characters="\r\n")
words = st.one_of(
    st.text(PLAIN + "_-.,;:!?'\"()/", min_size=1, max_size=10),
    st.text(any_characters, min_size=1, max_size=5),
    st.sampled_from(
        [
            "*emphasis*",
            "**bold**",
            "`inline code`",
            "``a ` tick``",
            "[a link](https://example.org/a_b?x=1)",
            "<b>html</b>",
            "&amp;",
            "a|b",
            "\\*",
            "100%",
            "#tag",
            "été",
            "日本語",
            "🙂",
            "$HOME",
            "~tilde~",
            "[@v](domarkx://set?value=expanded%20macro)",
        ]
    ),
)


# Strategies are built once, here, not inside the composites below: a strategy
# built in a draw is validated and analysed anew each time, which cost more than
# running the test on the document it made. The documents are the same.
more_words = st.lists(words, max_size=6)
line_ends = st.sampled_from(["", "", "", "  ", "\t"])


@st.composite
def sentences(draw) -> str:
    line = " ".join([draw(first_words), *draw(more_words)])
    return line + draw(line_ends)


@st.composite
def paragraphs(draw) -> str:
    return "\n".join(draw(st.lists(sentences(), min_size=1, max_size=3)))


@st.composite
def lists(draw) -> str:
    items = draw(st.lists(sentences(), min_size=1, max_size=4))
    style = draw(st.sampled_from(["- ", "* ", "1. "]))
    lines = [style + item for item in items]
    if draw(st.booleans()):
        lines.insert(1, " " * len(style) + "- " + draw(sentences()))
    return "\n".join(lines)


@st.composite
def tables(draw) -> str:
    columns = draw(st.integers(1, 3))
    rows = draw(st.lists(st.lists(first_words, min_size=columns, max_size=columns), max_size=3))
    header = draw(st.lists(first_words, min_size=columns, max_size=columns))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * columns]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _text_kinds(quoted: bool) -> list[st.SearchStrategy[str]]:
    kinds = [
        paragraphs(),
        lists(),
        tables(),
        sentences().map(lambda s: "### " + s),
        sentences().map(lambda s: f"{s}\n===="),  # a level-1 setext heading
        st.sampled_from(["---", "***", "[ref]: https://example.org"]),
        # An HTML block ends only at a blank line (CommonMark 4.6): without one, the
        # next message's heading (documents may join parts with one newline) would be
        # part of it. In a quote, the quote's end ends it.
        st.just("<div>\nhtml block\n</div>" + ("" if quoted else "\n")),
        sentences().map(lambda s: f"- item\n\n  ```sh\n  {s}\n  ```"),  # a fence in a list
        sentences().map(lambda s: f"    {s}"),  # indented code is text
        sentences().map(lambda s: f"  {s}\\"),  # leading spaces, a backslash break
    ]
    if quoted:
        # Inside a quote, a `## heading` and a fence are just text.
        kinds += [
            sentences().map(lambda s: "## " + s),
            st.builds(lambda c: f"```bash\n{c}\n```", sentences()),
        ]
    return kinds


chunk_lists = {
    q: st.lists(st.one_of(_text_kinds(q)), min_size=1, max_size=3) for q in (False, True)
}


@st.composite
def text_chunks(draw, quoted: bool) -> str:
    return "\n\n".join(draw(chunk_lists[quoted]))


@st.composite
def text_blocks(draw) -> str:
    if draw(st.booleans()):
        body = draw(text_chunks(quoted=True))
        return "\n".join(f"> {line}" if line else ">" for line in body.split("\n"))
    return draw(text_chunks(quoted=False))


info_values = st.one_of(
    st.text(PLAIN + "._-/", min_size=1, max_size=10),
    st.sampled_from(["two words.sh", "it's", 'say "hi"', "", "a=b", "`tick`", "tab\there"]),
)


info_languages = st.sampled_from(["bash", "python", "sh", "text", "js", ""])
info_keys = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=5), max_size=2)
info_flags = st.lists(st.sampled_from(["norun", "run", "hidden", "x-y"]), max_size=2)


@st.composite
def info_strings(draw) -> str:
    language = draw(info_languages)
    words: list[str] = []
    if draw(st.booleans()):
        words.append(_shell_word("name=" + draw(info_values)))
    keys = draw(info_keys)
    words += [_shell_word(f"{key}={draw(info_values)}") for key in keys if key != "name"]
    words += draw(info_flags)
    if not language and words:
        language = "text"
    return " ".join([language, *words]).strip()


def _shell_word(word: str) -> str:
    import shlex

    return word if all(c in PLAIN + "=._-/" for c in word) else shlex.quote(word)


code_lines = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(
        [
            "```",
            "````bash",
            "~~~",
            "## user",
            "---",
            "> not a quote",
            "    indented",
            "",
            "[@x](domarkx://not-expanded)",
        ]
    ),
)


def fenced(info: str, code: str, extra: int) -> str:
    """A fence that the code cannot close: longer than any run of its character."""
    char = "~" if "`" in info or extra % 2 else "`"
    longest = 0
    run = 0
    for c in code:
        run = run + 1 if c == char else 0
        longest = max(longest, run)
    marker = char * (max(3, longest + 1) + extra // 2)
    return f"{marker}{info}\n{code}\n{marker}" if code else f"{marker}{info}\n{marker}"


class Piece(NamedTuple):
    """Generated Markdown and what it holds: messages, code blocks, output blocks
    (``setup_outputs``: those after the setup script)."""

    text: str
    messages: int = 0
    code: int = 0
    outputs: int = 0
    setup_outputs: int = 0


code_bodies = st.lists(code_lines, max_size=5)
output_bodies = st.lists(code_lines, max_size=3)
output_attrs = st.sampled_from(
    ["exit_code=0", "exit_code=1", "stream=stderr", "exit_code=137 timed_out", ""]
)
infos = info_strings()
fence_extras = st.integers(0, 3)
output_counts = st.integers(0, 2)


@st.composite
def code_blocks(draw) -> Piece:
    code = "\n".join(draw(code_bodies))
    parts = [fenced(draw(infos), code, draw(fence_extras))]
    for _ in range(draw(output_counts)):
        attrs = draw(output_attrs)
        out = "\n".join(draw(output_bodies))
        parts.append(fenced(f"text output {attrs}".strip(), out, 0))
    return Piece("\n\n".join(parts), code=1, outputs=len(parts) - 1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(PLAIN, min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
mappings = st.dictionaries(st.text(PLAIN + "_", min_size=1, max_size=8), json_values, max_size=4)


json_indents = st.sampled_from([None, 2])


@st.composite
def data_blocks(draw, flag: str, data: dict) -> str:
    if draw(st.booleans()):
        return fenced(f"json {flag}", json.dumps(data, indent=draw(json_indents)), 0)
    body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False).rstrip("\n") if data else ""
    return fenced(f"yaml {flag}", body, 0)


roles = st.sampled_from(["system", "system_message", "user", "assistant", "tool"]).flatmap(
    lambda r: st.sampled_from([r, r.upper(), r.capitalize()])
)
message_blocks = st.lists(st.one_of(text_blocks().map(Piece), code_blocks()), max_size=4)


@st.composite
def messages(draw) -> Piece:
    role = draw(roles)
    parts = [f"## {role}"]
    if draw(st.booleans()):
        parts.append(draw(data_blocks("msg-metadata", draw(mappings))))
    blocks = draw(message_blocks)
    parts += [block.text for block in blocks]
    return Piece(
        "\n\n".join(parts),
        messages=1,
        code=sum(block.code for block in blocks),
        outputs=sum(block.outputs for block in blocks),
    )


@st.composite
def session_configs(draw) -> dict:
    config: dict = {}
    if draw(st.booleans()):
        config["engine"] = draw(st.sampled_from(["local_shell", "docker"]))
    if draw(st.booleans()):
        config["timeout"] = draw(
            st.integers(1, 600) | st.floats(0.5, 600).map(lambda f: round(f, 2))
        )
    if draw(st.booleans()):
        config["env"] = draw(st.dictionaries(st.sampled_from(["A", "B_2", "PATHX"]), first_words))
    if draw(st.booleans()):
        config["model"] = {
            "provider": "scripted",
            "temperature": draw(st.sampled_from([0, 0.5, 1])),
        }
    if draw(st.booleans()):  # the older format's keys
        config.update(type="AssistantAgentState", version="1.0.0", llm_context=draw(mappings))
    return config


setup_languages = st.sampled_from(["python", "bash"])
setup_bodies = st.lists(code_lines, max_size=4)
message_lists = st.lists(messages(), max_size=5)
configs = session_configs()
separators = st.sampled_from(["\n\n", "\n\n\n", "\n"])
document_ends = st.sampled_from(["\n", "", "\n\n"])


@st.composite
def documents(draw) -> Piece:
    parts: list[str] = []
    if draw(st.booleans()):
        front = draw(mappings)
        parts.append("---\n" + yaml.safe_dump(front, allow_unicode=True, sort_keys=False) + "---")
    if draw(st.booleans()):
        parts.append("# " + draw(sentences()) + "\n\n" + draw(paragraphs()))
    if draw(st.booleans()):
        parts.append(draw(data_blocks("session-config", draw(configs))))
    setup_outputs = 0
    if draw(st.booleans()):
        language = draw(setup_languages)
        code = "\n".join(draw(setup_bodies))
        parts.append(fenced(f"{language} setup-script", code, 0))
        # What a run's export writes after it: the setup script's output.
        setup_outputs = draw(output_counts)
        for _ in range(setup_outputs):
            out = "\n".join(draw(output_bodies))
            parts.append(fenced(f"text output {draw(output_attrs)}".strip(), out, 0))
    found = draw(message_lists)
    parts += [message.text for message in found]
    separator = draw(separators)
    return Piece(
        separator.join(parts) + draw(document_ends),
        messages=len(found),
        code=sum(m.code for m in found),
        outputs=sum(m.outputs for m in found),
        setup_outputs=setup_outputs,
    )


@pytest.mark.slow(4)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents())
def test_generated_documents_round_trip(manager, document):
    snapshot = import_text(manager, document.text)
    assert_round_trip(manager, snapshot)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents())
def test_generated_documents_lose_and_add_nothing(manager, document):
    snapshot = import_text(manager, document.text)
    blocks = [block for message in snapshot.conversation for block in message.content]
    assert len(snapshot.conversation) == document.messages
    assert sum(isinstance(block, CodeBlock) for block in blocks) == document.code
    assert sum(isinstance(block, OutputBlock) for block in blocks) == document.outputs
    assert len(snapshot.setup_output) == document.setup_outputs
    assert all(block.value.strip() for block in blocks if isinstance(block, TextBlock))
