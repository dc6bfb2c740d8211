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

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.models import SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.session.export import render
from domarkx.session.snapshot import SnapshotManager
from tests.support import FRONT, LINES


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
