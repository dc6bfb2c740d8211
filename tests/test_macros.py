"""Macros (spec section 2), in process: built-ins, parameters, recursion, where they expand."""

from __future__ import annotations

import pytest

from domarkx.data.models import CodeBlock, SessionSnapshot, TextBlock
from domarkx.data.store import Store
from domarkx.errors import DocumentError, MacroError
from domarkx.parsing.macros import Expansion, MacroContext, register_macro
from domarkx.registry import unregister
from domarkx.session.snapshot import ImportResult, SnapshotManager


@pytest.fixture
def make(project):
    """``make(files, params=None)``: write ``files``, import ``sessions/main.md``."""

    def run(files: dict, params: dict | None = None, doc: str = "sessions/main.md") -> ImportResult:
        root = project(files)
        return SnapshotManager(Store(root / ".domarkx", root)).import_file(root / doc, params)

    return run


def only_text(snapshot: SessionSnapshot, index: int = 0) -> str:
    blocks = snapshot.conversation[index].content
    assert len(blocks) == 1 and isinstance(blocks[0], TextBlock), blocks
    return blocks[0].value


def macro_error(make, files: dict, params: dict | None = None) -> MacroError:
    with pytest.raises(MacroError) as info:
        make(files, params)
    return info.value


# Built-in commands ----------------------------------------------------------------------


def test_set_gives_its_value(make):
    result = make({"sessions/main.md": "## user\n\nIn [@dir](domarkx://set?value=/tmp) now.\n"})
    assert only_text(result.snapshot) == "In /tmp now."


def test_set_without_a_value_gives_nothing(make):
    result = make({"sessions/main.md": "## user\n\n<[@x](domarkx://set)>\n"})
    assert only_text(result.snapshot) == "<>"


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("[@d](domarkx://date)", "2023-11-14"),
        ("[@d](domarkx://date?format=%Y-%m-%d)", "2023-11-14"),
        ("[@d](domarkx://date?format=%25d.%25m.%25Y)", "14.11.2023"),
        ("[@d](domarkx://date?format=%H:%M+UTC)", "22:13 UTC"),
    ],
)
def test_date_honours_source_date_epoch(make, monkeypatch, macro, expected):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = make({"sessions/main.md": f"## user\n\n{macro}\n"})
    assert only_text(result.snapshot) == expected


def test_date_without_source_date_epoch_is_today(make, monkeypatch):
    import datetime as dt

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = dt.datetime.now().astimezone().date().isoformat()
    value = only_text(make({"sessions/main.md": "## user\n\n[@d](domarkx://date)\n"}).snapshot)
    after = dt.datetime.now().astimezone().date().isoformat()
    assert value in (before, after)


def test_a_bad_source_date_epoch_is_a_clear_error(make, monkeypatch):
    from domarkx.errors import DomarkxError

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(DomarkxError) as info:
        make({"sessions/main.md": "## user\n\n[@d](domarkx://date)\n"})
    assert "SOURCE_DATE_EPOCH" in info.value.message


# include ----------------------------------------------------------------------------------


def test_include_is_relative_to_the_including_file_and_nests(make):
    result = make(
        {
            "sessions/main.md": "## user\n\nStart. [@i](domarkx://include?path=sub/part.md) End.\n",
            "sessions/sub/part.md": "part [@j](domarkx://include?path=../_shared/deep.md)\n",
            "sessions/_shared/deep.md": "deep\n\n\n",
        }
    )
    assert only_text(result.snapshot) == "Start. part deep End."
    assert result.included == ["sessions/_shared/deep.md", "sessions/sub/part.md"]


def test_included_code_blocks_become_blocks(make):
    result = make(
        {
            "sessions/main.md": "## assistant\n\nIntro\n\n[@i](domarkx://include?path=_steps.md)\n",
            "sessions/_steps.md": "Step one:\n\n```bash name=one.sh\necho one\n```\n\n> and a quote\n",
        }
    )
    assert result.snapshot.conversation[0].content == [
        TextBlock(value="Intro\n\nStep one:"),
        CodeBlock(language="bash", name="one.sh", code="echo one"),
        TextBlock(value="and a quote", quoted=True),
    ]


def test_an_include_inside_quoted_text_stays_quoted_text(make):
    result = make(
        {
            "sessions/main.md": "## user\n\n> Look:\n> [@i](domarkx://include?path=_code.md)\n",
            "sessions/_code.md": "```bash\nls\n```\n",
        }
    )
    assert result.snapshot.conversation[0].content == [
        TextBlock(value="Look:\n```bash\nls\n```", quoted=True)
    ]


def test_include_in_the_preamble(make):
    result = make(
        {
            "sessions/main.md": "# Title\n\n[@i](domarkx://include?path=_intro.md)\n\n## user\n\nx\n",
            "sessions/_intro.md": "An introduction shared by sessions.\n",
        }
    )
    assert result.snapshot.preamble == "# Title\n\nAn introduction shared by sessions."


def test_an_included_path_may_be_percent_encoded(make):
    result = make(
        {
            "sessions/main.md": "## user\n\n[@i](domarkx://include?path=my%20notes.md)\n",
            "sessions/my notes.md": "notes\n",
        }
    )
    assert only_text(result.snapshot) == "notes"


@pytest.mark.parametrize(
    ("files", "file", "line", "words"),
    [
        (
            {"sessions/main.md": "## user\n\nx\n\n[@i](domarkx://include?path=_missing.md)\n"},
            "sessions/main.md",
            5,
            "not found",
        ),
        (
            {"sessions/main.md": "## user\n\n[@i](domarkx://include)\n"},
            "sessions/main.md",
            3,
            "needs a path",
        ),
        (
            {"sessions/main.md": "## user\n\n[@i](domarkx://include?path=../../outside.md)\n"},
            "sessions/main.md",
            3,
            "leaves the project folder",
        ),
        (
            {"sessions/main.md": "## user\n\n[@i](domarkx://include?path=/etc/hostname)\n"},
            "sessions/main.md",
            3,
            "leaves the project folder",
        ),
        (
            {
                "sessions/main.md": "## user\n\n[@i](domarkx://include?path=_a.md)\n",
                "sessions/_a.md": "a\n[@i](domarkx://include?path=_b.md)\n",
                "sessions/_b.md": "b\n\nb [@i](domarkx://include?path=_a.md)\n",
            },
            "sessions/_b.md",
            3,
            "include cycle: sessions/main.md -> sessions/_a.md -> sessions/_b.md -> sessions/_a.md",
        ),
        (
            {
                "sessions/main.md": "## user\n\n[@i](domarkx://include?path=main.md)\n",
            },
            "sessions/main.md",
            3,
            "include cycle: sessions/main.md -> sessions/main.md",
        ),
        (
            {
                "sessions/main.md": "## user\n\n[@i](domarkx://include?path=_a.md)\n",
                "sessions/_a.md": "one\ntwo [@x](domarkx://nobody)\n",
            },
            "sessions/_a.md",
            2,
            "unknown macro 'nobody'",
        ),
        (
            {
                "sessions/main.md": "## user\n\n[@i](domarkx://include?path=_latin1.md)\n",
                "sessions/_latin1.md": "caf\u00e9".encode("latin-1"),
            },
            "sessions/main.md",
            3,
            "not UTF-8",
        ),
    ],
)
def test_include_errors(make, files, file, line, words):
    err = macro_error(make, files)
    assert (err.file, err.line) == (file, line)
    assert words in err.message


def test_an_error_in_an_included_file_names_the_chain(make):
    err = macro_error(
        make,
        {
            "sessions/main.md": "## user\n\n\n[@i](domarkx://include?path=_a.md)\n",
            "sessions/_a.md": "[@i](domarkx://include?path=_b.md)\n",
            "sessions/_b.md": "\n\n[@i](domarkx://include?path=_gone.md)\n",
        },
    )
    assert (err.file, err.line) == ("sessions/_b.md", 3)
    assert "sessions/main.md:4 -> sessions/_a.md:1 -> sessions/_b.md:3" in err.message


def test_included_text_may_not_bring_role_headings(make):
    with pytest.raises(DocumentError) as info:
        make(
            {
                "sessions/main.md": "## user\n\n[@i](domarkx://include?path=_turns.md)\n",
                "sessions/_turns.md": "hello\n\n## assistant\n\nhi\n",
            }
        )
    assert "role heading" in info.value.message
    assert info.value.file == "sessions/main.md"


# Parameters -------------------------------------------------------------------------------


def test_parameters_come_from_the_command_line_then_the_front_matter(make):
    files = {
        "sessions/main.md": """\
            ---
            params:
              who: front matter
              count: 3
            ---
            ## user

            [@w](domarkx://who) x[@n](domarkx://count)
            """
    }
    assert only_text(make(files).snapshot) == "front matter x3"
    assert only_text(make(files, {"who": "ana"}).snapshot) == "ana x3"


def test_an_unknown_macro_without_a_parameter_is_an_error(make):
    err = macro_error(
        make, {"sessions/main.md": "## user\n\nhello\n\nthere [@who](domarkx://who)\n"}
    )
    assert (err.file, err.line) == ("sessions/main.md", 5)
    assert "unknown macro 'who'" in err.message
    assert err.hint is not None
    assert "--param who=VALUE" in err.hint
    assert "params:" in err.hint


def test_a_parameter_value_is_expanded_again(make):
    result = make(
        {"sessions/main.md": "## user\n\n[@g](domarkx://greeting)\n"},
        {"greeting": "Hello from [@s](domarkx://set?value=a%20macro)"},
    )
    assert only_text(result.snapshot) == "Hello from a macro"


def test_a_macro_that_keeps_producing_itself_stops(make):
    err = macro_error(
        make,
        {"sessions/main.md": "## user\n\n[@l](domarkx://loop)\n"},
        {"loop": "[@l](domarkx://loop)"},
    )
    assert err.line == 3
    assert "nest deeper" in err.message


# Syntax: queries, extra-parameter links, percent-decoding -----------------------------------


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("[@s](domarkx://set?value=a%20b)", "a b"),
        ("[@s](domarkx://set?value=a+b)", "a b"),
        ("[@s](domarkx://set?value=a%2Bb)", "a+b"),
        ("[@s](domarkx://set?value=100%25)", "100%"),
        ("[@s](domarkx://set?value=%25Y)", "%Y"),
        ("[@s](domarkx://set?value=%E2%9C%93)", "\u2713"),
        ("[@s](domarkx://set?value=x&value=y)", "y"),
        ("[@s](domarkx://set)[value](from%20a%20link)", "from a link"),
        ("[@s](domarkx://set)[value](a+b)", "a+b"),
        ("[@s](domarkx://set?value=query)[value](link)", "link"),
        ("[@s](domarkx:///set/?value=slashes)", "slashes"),
        (
            "[@s](domarkx://set?value=%5B%40t%5D%28domarkx%3A%2F%2Fset%3Fvalue%3Dinner%29)",
            "inner",
        ),
    ],
)
def test_macro_syntax(make, macro, expected):
    result = make({"sessions/main.md": f"## user\n\n<{macro}>\n"})
    assert only_text(result.snapshot) == f"<{expected}>"


def test_an_extra_parameter_link_must_follow_without_a_space(make):
    result = make({"sessions/main.md": "## user\n\n[@s](domarkx://set) [value](x)\n"})
    assert only_text(result.snapshot) == " [value](x)"


def test_ordinary_links_and_other_schemes_are_left_alone(make):
    text = "[@s](https://example.org) [s](domarkx://set?value=no) [@s](mailto:a@b)"
    assert only_text(make({"sessions/main.md": f"## user\n\n{text}\n"}).snapshot) == text


def test_macros_are_not_expanded_in_code(make):
    result = make(
        {
            "sessions/main.md": """\
                ---
                note: "[@f](domarkx://set?value=front)"
                ---

                ```yaml session-config
                env: {A: "[@c](domarkx://set?value=config)"}
                ```

                ```bash setup-script
                echo "[@s](domarkx://set?value=setup)"
                ```

                ## assistant

                ```json msg-metadata
                {"m": "[@m](domarkx://set?value=meta)"}
                ```

                `[@i](domarkx://set?value=inline)` and ``[@j](domarkx://set?value=double)``
                but [@k](domarkx://set?value=this) is expanded.

                ```bash
                echo "[@b](domarkx://unknown-but-in-code)"
                ```
                """
        }
    )
    snapshot = result.snapshot
    assert snapshot.metadata.user_metadata == {"note": "[@f](domarkx://set?value=front)"}
    assert snapshot.content_dict()["execution_config"] == {
        "env": {"A": "[@c](domarkx://set?value=config)"}
    }
    assert snapshot.setup_script is not None
    assert snapshot.setup_script.code == 'echo "[@s](domarkx://set?value=setup)"'
    message = snapshot.conversation[0]
    assert message.message_metadata == {"m": "[@m](domarkx://set?value=meta)"}
    assert message.content == [
        TextBlock(
            value="`[@i](domarkx://set?value=inline)` and ``[@j](domarkx://set?value=double)``\n"
            "but this is expanded."
        ),
        CodeBlock(language="bash", code='echo "[@b](domarkx://unknown-but-in-code)"'),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # the older format quotes whole messages, code included
            "> ```python\n> print('[@m](domarkx://set?value=X)')\n> ```\n> after [@m](domarkx://set?value=X)",
            "```python\nprint('[@m](domarkx://set?value=X)')\n```\nafter X",
        ),
        (
            "> ~~~\n> [@m](domarkx://set?value=X)\n> ~~~",
            "~~~\n[@m](domarkx://set?value=X)\n~~~",
        ),
        (
            "- a list item\n\n  ````sh\n  ```\n  [@m](domarkx://set?value=X)\n  ````\n\n  [@m](domarkx://set?value=X)",
            "- a list item\n\n  ````sh\n  ```\n  [@m](domarkx://set?value=X)\n  ````\n\n  X",
        ),
        (
            "[@m](domarkx://set?value=X) ``` not a fence ``` [@m](domarkx://set?value=X)",
            "X ``` not a fence ``` X",
        ),
    ],
)
def test_macros_are_not_expanded_in_fenced_code_inside_text(make, text, expected):
    result = make({"sessions/main.md": f"## user\n\n{text}\n"})
    assert only_text(result.snapshot) == expected


def test_macros_expand_in_quoted_text(make):
    result = make({"sessions/main.md": "## user\n\n> Hi [@w](domarkx://set?value=you)\n"})
    assert result.snapshot.conversation[0].content == [TextBlock(value="Hi you", quoted=True)]


# Commands added at run time ------------------------------------------------------------


@pytest.fixture
def shout():
    def macro(call: MacroContext) -> str:
        return f"{call.params.get('text', call.text).upper()} ({call.file.name}:{call.line})"

    register_macro("shout", macro)
    yield macro
    unregister("domarkx.macros", "shout")


def test_a_registered_command_gets_its_call(make, shout):
    result = make(
        {
            "sessions/main.md": "## user\n\nfirst\n[@hey](domarkx://shout) [@x](domarkx://shout?text=yo)\n"
        }
    )
    assert only_text(result.snapshot) == "first\nHEY (main.md:4) YO (main.md:4)"


def test_a_registered_command_may_return_an_expansion_relative_to_another_file(make):
    def snippet(call: MacroContext) -> Expansion:
        path = call.root / "snippets" / f"{call.params['name']}.md"
        return Expansion(text=path.read_text(encoding="utf-8"), file=path)

    register_macro("snippet", snippet)
    try:
        result = make(
            {
                "sessions/main.md": "## user\n\n[@s](domarkx://snippet?name=greet)\n",
                "snippets/greet.md": "Hello [@i](domarkx://include?path=name.txt)",
                "snippets/name.txt": "world",
            }
        )
    finally:
        unregister("domarkx.macros", "snippet")
    assert only_text(result.snapshot) == "Hello world"


def test_an_error_raised_by_a_command_names_the_macro(make):
    def strict(call: MacroContext) -> str:
        raise call.error("strict wants a value", hint="add ?value=...")

    register_macro("strict", strict)
    try:
        err = macro_error(make, {"sessions/main.md": "## user\n\n\n[@s](domarkx://strict)\n"})
    finally:
        unregister("domarkx.macros", "strict")
    assert (err.file, err.line, err.message, err.hint) == (
        "sessions/main.md",
        4,
        "strict wants a value",
        "add ?value=...",
    )
