"""Hostile documents: one clear error (file:line) in bounded time and memory, or a bounded read.

Each case once crashed with a traceback or took seconds to gigabytes. The
import runs the way a user runs it (``domarkx import``, in process): exit 1,
one message naming the file and line, nothing stored.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from domarkx.cli.main import main
from domarkx.data.models import TextBlock
from domarkx.parsing.markdown import MarkdownParser

# CPU time of this process (not wall time, which load stretches); the faults took 10-30 s.
CPU_SECONDS = 5.0
MEGABYTES = 64

# A 277-byte YAML alias bomb: 9**7 (4.8 million) strings if every alias were copied.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg", strict=True)
)


def bounded(function):
    """Run ``function``; assert it used at most CPU_SECONDS and MEGABYTES; return its result."""
    tracemalloc.start()
    started = time.process_time()
    try:
        return function()
    finally:
        used = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert used < CPU_SECONDS, f"used {used:.1f} s of CPU"
        assert peak < MEGABYTES * 2**20, f"peak {peak / 2**20:.0f} MB"


BAD = [
    ("recursive alias", "---\na: &a [*a]\n---\n\n## user\n\nhi\n", 2, "alias that contains itself"),
    ("alias bomb", f"```yaml session-config\n{BOMB}```\n", 2, "more than 100,000 values"),
    (
        "alias bomb in front matter",
        f"---\n{BOMB}---\n",
        2,
        "more than 100,000 values",
    ),
    (
        "deep JSON (500)",
        "## user\n\n```json msg-metadata\n" + "[" * 500 + "]" * 500 + "\n```\n",
        4,
        "nests deeper than 100 levels",
    ),
    (
        "deep JSON (1000)",
        "## user\n\n```json msg-metadata\n" + '{"a":' * 1000 + "1" + "}" * 1000 + "\n```\n",
        4,
        "nests deeper than 100 levels",
    ),
    (
        "deep YAML",
        "```yaml session-config\nx: " + "[" * 1000 + "]" * 1000 + "\n```\n",
        2,
        "nest",
    ),
    (
        "5,000-digit integer (JSON)",
        '## user\n\n```json msg-metadata\n{"n": ' + "9" * 5000 + "}\n```\n",
        4,
        "4300 digits",
    ),
    (
        "5,000-digit integer (YAML)",
        "```yaml session-config\nn: " + "9" * 5000 + "\n```\n",
        2,
        "4300 digits",
    ),
    (
        "lone surrogate",
        '## user\n\n```json msg-metadata\n{"a": "\\ud800"}\n```\n',
        4,
        "lone surrogate",
    ),
    ("timeout: .inf", "```yaml session-config\ntimeout: .inf\n```\n", 1, "finite number"),
    ("timeout: 1e300", "```yaml session-config\ntimeout: 1e300\n```\n", 1, "less than"),
    ("timeout: true", "```yaml session-config\ntimeout: true\n```\n", 1, "not true or false"),
    ("cpus: -2", "```yaml session-config\ncpus: -2\n```\n", 1, "greater than 0"),
]


@pytest.mark.parametrize(
    ("text", "line", "words"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_one_clear_error_in_bounded_time_and_memory(project, capsys, text, line, words):
    root = project({"sessions/bad.md": ""})
    (root / "sessions" / "bad.md").write_text(text, encoding="utf-8")
    status = bounded(lambda: main(["import", "sessions/bad.md"]))
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"domarkx: error: sessions/bad.md:{line}: ")
    assert words in err
    assert "Traceback" not in err
    assert (
        not list((root / ".domarkx").glob("**/snapshots/*"))
        if (root / ".domarkx").exists()
        else True
    )


def parse(text: str):
    return bounded(lambda: MarkdownParser().parse_text(text, "doc.md"))


def test_a_yaml_set_is_a_sorted_list_the_same_in_every_process():
    parsed = parse("---\ns: !!set {b: null, a: null, c: null}\n---\n")
    assert parsed.front_matter == {"s": ["a", "b", "c"]}


def test_four_hundred_nested_quotes_with_an_indented_line():
    text = "## user\n\n" + "\n".join(">" * i + " x" for i in range(1, 401)) + "\n    y\n"
    [block] = parse(text).messages[0].content
    assert isinstance(block, TextBlock) and block.quoted


def test_a_40_kb_heading_line():
    [message] = parse("## user\n\n# a" + " " * 40_000 + "b\n").messages
    assert message.content[0].value.endswith("b")


def test_repeated_link_openers_beside_a_macro(project, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    text = "## user\n\n" + "[@" * 20_000 + "\n\n[@x](domarkx://date) " + "`" * 5_000 + "\n"
    root = project({"sessions/a.md": ""})
    (root / "sessions" / "a.md").write_text(text, encoding="utf-8")
    assert bounded(lambda: main(["import", "sessions/a.md"])) == 0
    assert any((root / ".domarkx" / "snapshots").iterdir())  # where a failed import writes nothing


def test_role_headings_with_character_references_on_every_path(tmp_path: Path):
    path = tmp_path / "doc.md"
    path.write_text("## &#117;ser\n\nhi\n\nassist&#x61;nt\n---\n\nthere\n", encoding="utf-8")
    parsed = MarkdownParser().parse_file(path)
    assert [m.role for m in parsed.messages] == ["user", "assistant"]
