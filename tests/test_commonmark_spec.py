"""The 652 examples of the CommonMark spec 0.30, each placed inside a message.

The examples are committed as data, ``tests/data/commonmark-spec-0.30.json``,
taken from ``spec.txt`` of the npm package ``commonmark-spec`` 0.30.0 (the
spec's own release; no PyPI wheel ships them); ``tests/data/commonmark_spec.py``
regenerates the file. The tests need neither npm nor the network.

For every example: markdown-it-py, the one parser domarkx reads structure
with (there is no separate fast path to compare), renders it as the spec says
(where it does not, the example is listed below); the document ``## user`` +
example imports, and its export imports back to the same snapshot, renders to
the same HTML, and exports to the same bytes. Examples that cannot sit inside
a message, or whose HTML export changes, are listed with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from domarkx.data.store import Store
from domarkx.errors import DocumentError
from domarkx.session.export import render
from domarkx.session.snapshot import SnapshotManager
from tests.support import import_text

VERSION = "0.30.0"
COUNT = 652
DATA = Path(__file__).resolve().parent / "data" / "commonmark-spec-0.30.json"

# A level-2 heading starts a message (spec section 4.1 of session-format.md): an
# example with one is not a message body. Each of these fails to import as a
# message with an "unknown role heading" error, and no other example does.
ROLE_HEADINGS = {
    *(59, 62, 68, 71, 76, 77, 79, 80, 83, 84, 86, 89, 90, 91, 95, 96, 102, 103, 115, 141),
}
# Quotes separated only by blank lines form one quoted block (session-format.md
# 4.1, as the older format wrote whole messages): export writes one quote where
# the example has two. The text and the snapshot are the same; the HTML has one
# <blockquote> instead of two.
QUOTES_JOINED = {242, 252}
# The reference renders these differently from the spec 0.30 text:
# 218, 239, 240: an empty blockquote is "<blockquote></blockquote>" (whitespace only);
# 625, 626: CommonMark 0.31 changed what an HTML comment is, and markdown-it-py follows it.
REFERENCE_DIFFERS = {218, 239, 240, 625, 626}


@pytest.fixture(scope="module")
def examples() -> list[tuple[str, str]]:
    """(markdown, html) of each example, in the spec's order."""
    data = json.loads(DATA.read_text(encoding="utf-8"))
    assert data["version"] == VERSION
    found = [(example["markdown"], example["html"]) for example in data["examples"]]
    assert len(found) == COUNT
    assert [example["example"] for example in data["examples"]] == list(range(1, COUNT + 1))
    return found


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> SnapshotManager:
    root = tmp_path_factory.mktemp("spec-project")
    (root / "sessions").mkdir()
    return SnapshotManager(Store(root / ".domarkx", root))


@pytest.fixture(scope="module")
def reference() -> MarkdownIt:
    return MarkdownIt("commonmark")


@pytest.mark.parametrize("number", range(1, COUNT + 1))
def test_spec_example_inside_a_message(number, examples, manager, reference, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    markdown, html = examples[number - 1]
    if number not in REFERENCE_DIFFERS:
        assert reference.render(markdown) == html
    document = f"## user\n\n{markdown}"
    if number in ROLE_HEADINGS:
        with pytest.raises(DocumentError, match="unknown role heading"):
            import_text(manager, document, f"e{number}")
        return
    snapshot = import_text(manager, document, f"e{number}")
    exported = render(snapshot)
    again = import_text(manager, exported, f"e{number}-again")
    assert again.snapshot_id == snapshot.snapshot_id
    assert render(again) == exported
    same_html = reference.render(exported) == reference.render(document)
    assert same_html != (number in QUOTES_JOINED)


def test_the_listed_exceptions_are_real_examples():
    listed = [ROLE_HEADINGS, QUOTES_JOINED, REFERENCE_DIFFERS]
    assert all(numbers <= set(range(1, COUNT + 1)) for numbers in listed)
    assert not ROLE_HEADINGS & QUOTES_JOINED
