"""Whole documents from hostile pieces: domarkx's own errors or a stable round trip.

Where ``test_roundtrip`` writes well-formed documents, these are put together
from lines and pieces a careless user (or a model) writes: unclosed fences,
fences in lists and quotes, HTML blocks and comments left open, lazy quote
lines, setext underlines, macros (escaped, as images, formed by results),
special blocks in odd places. Every document either fails with a
``DomarkxError`` or imports, exports, imports back to the same snapshot, and
exports again to the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.session.export import render
from domarkx.session.snapshot import SnapshotManager

LINES = st.sampled_from(
    [
        *["", "", "", " ", "\t", "para text", "Para two", "  indented 2", "    indented 4"],
        *["## user", "## assistant", "##  tool  ##", "## &#117;ser", "### three", "#", "# one"],
        *["user", "---", "***", "===", "- - -", "  ---", "___", "--", "  ="],
        *["```", "```bash", "````", "~~~", "~~~ info `x`", "   ```sh", "    ```", "``` a ``` b"],
        *["```text output", "```json msg-metadata", "{}", "```yaml session-config", "x: 1"],
        *["```'' setup-script", "```python name='a b.py' run", "```sh 'odd'=v 'a=b'"],
        *["> quote", ">", "> > nested", ">no space", "   > q", "> ```", "> - item", ">\tq"],
        *["- item", "* item", "+ item", "1. one", "1) one", "2. two", "-", "  - nested"],
        *["   continued", "      deep", "  ```", "  code in item"],
        *["| a | b |", "|---|---|", "<div>", "</div>", "<!-- c -->", "<!--", "-->", "<pre>"],
        *["[a]: https://x", "[x] not a definition", "\\## escaped", "a\\", "text `code`"],
        *["[@p](domarkx://p)", "\\[@p](domarkx://p)", "![@p](domarkx://p)", "[@o](domarkx://o)"],
        *["](domarkx://p)", "[@d](domarkx://date)", "`[@p](domarkx://p)`", "[@"],
        *["form\x0cfeed", "a\u2028b", "caf\u00e9", "tab\tinside"],
    ]
)
FRONT = st.sampled_from(
    [
        "",
        '---\nparams:\n  p: "value"\n  o: "[@y"\n---\n',
        '---\nparams:\n  p: "> quoted"\n  o: ""\n---\n',
        '---\nparams:\n  p: "```sh\\nls"\n  o: "x"\n---\n',
        "\n---\n",
        "---\ntitle: t\n---\n\n",
    ]
)


@st.composite
def documents(draw) -> str:
    lines = draw(st.lists(LINES, max_size=30))
    return draw(FRONT) + "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnapshotManager]:
    root = tmp_path_factory.mktemp("fuzz-project")
    (root / "sessions").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "0")
        yield SnapshotManager(Store(root / ".domarkx", root))


def _import(manager: SnapshotManager, text: str, name: str) -> SessionSnapshot:
    path = manager.store.root / "sessions" / f"{name}.md"
    path.write_bytes(text.encode("utf-8"))
    expanded, _ = manager.expand(manager.parse(path))
    return manager.build(expanded)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=documents())
def test_a_document_fails_clearly_or_round_trips(manager, text):
    try:
        snapshot = _import(manager, text, "doc")
    except DomarkxError:
        return
    exported = render(snapshot)
    again = _import(manager, exported, "exported")
    assert again.snapshot_id == snapshot.snapshot_id, exported
    assert render(again) == exported


def test_import_time_grows_linearly_with_size(manager):
    """Ten times the text takes about ten times as long, not a hundred."""
    unit = "\n".join(
        [
            *["## user", "", "para text", "", "- item", "  - nested", "", "> quote", ""],
            *["```bash", "echo hi", "```", "", "<div>", "</div>", "", "[@p](domarkx://p) `c`", ""],
        ]
    )
    front = '---\nparams:\n  p: "value"\n---\n\n'

    def timed(copies: int) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            _import(manager, front + unit * copies, "big")
            best = min(best, time.perf_counter() - started)
        return best

    small, large = timed(20), timed(200)
    assert large < 25 * small, (small, large)
