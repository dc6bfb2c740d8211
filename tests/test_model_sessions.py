"""A build uses doit's thread runner only when a session may ask a model.

Whether one may is decided before any session is parsed again: from the
marks the parse stage left, and from a quick look at the documents parsed
before their last edit. The look may say "yes" wrongly (threads for
nothing); it must never say "no" to a document whose session-config names a
model (model calls would then wait one after the other).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domarkx.data.layout import Layout
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.pipeline import workers
from domarkx.pipeline.model_sessions import text_may_ask
from domarkx.pipeline.tasks import doit_config
from domarkx.session.snapshot import SnapshotManager
from tests.support import FRONT, LINES, doit, new_project, session

CONFIG_LINES = st.sampled_from(
    [
        "```yaml session-config",
        "```json session-config",
        "~~~ yaml session-config",
        "  ```yaml session-config",
        "model:",
        "model: {provider: scripted}",
        "  provider: scripted",
        "  name: m",
        '{"model": {"provider": "scripted"}}',
        "'model': x",
        "engine: local_shell",
        "a model: here",
        "```",
    ]
)


@st.composite
def documents(draw) -> str:
    lines = draw(st.lists(st.one_of(LINES, CONFIG_LINES, CONFIG_LINES), max_size=25))
    return draw(FRONT) + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnapshotManager]:
    root = tmp_path_factory.mktemp("model-project")
    (root / "sessions").mkdir()
    yield SnapshotManager(Store(root / ".domarkx", root))


@pytest.mark.slow(3)
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=documents())
def test_the_quick_look_never_misses_a_model(manager, text):
    path = manager.store.root / "sessions" / "doc.md"
    path.write_text(text, encoding="utf-8")
    try:
        parsed = manager.parse(path)
    except DomarkxError:
        return
    config = parsed.execution_config or {}
    if config.get("model") is not None:
        assert text_may_ask(text), text


def test_the_quick_look_reads_only_the_session_config():
    prose = "---\ntitle: a model\n---\n\n```yaml session-config\nengine: local_shell\n```\n\n"
    assert not text_may_ask(prose + "## user\n\nWhich model: this one?\n")
    assert not text_may_ask("## user\n\n```yaml session-config\nmodel: x\n```\n")
    assert text_may_ask("```yaml session-config\nmodel:\n  provider: scripted\n```\n")
    assert text_may_ask('```json session-config\n{"model": {"provider": "scripted"}}\n```\n')
    # A session-config block in a quote is quoted text, to the parser as to this look.
    assert not text_may_ask("> ```yaml session-config\n> model: x\n> ```\n")
    assert not text_may_ask("- x\n\n  ```yaml session-config\n  model: x\n  ```\n")
    # A "## " line inside a fence is no role heading: the config after it is read.
    assert text_may_ask("```\n## x\n```\n\n```yaml session-config\nmodel: x\n```\n")


def runner_threads(root) -> int:
    """The thread count doit's settings give a build of ``root`` (0: the serial runner)."""
    layout = Layout.at(str(root))
    try:
        return int(doit_config(layout)["num_process"])
    finally:
        workers.take_scan(layout)
        workers.end_run()


ASKS = (
    "---\nscripted_replies: [An answer.]\n---\n\n"
    "```yaml session-config\nmodel:\n  provider: scripted\n```\n\n## user\n\nQuestion?\n"
)


def touch_all(root, pattern: str = "*.md") -> None:
    """Edit the sessions ``pattern`` matches (a new line at the end): they are parsed again."""
    for path in (root / "sessions").glob(pattern):
        with open(path, "a") as handle:
            handle.write("\nOne more line.\n")


@pytest.mark.slow(3)
def test_a_big_build_uses_threads_only_when_a_session_may_ask_a_model(tmp_path, monkeypatch):
    monkeypatch.delenv("DOMARKX_LLM_CONCURRENCY", raising=False)
    many = workers.MIN_SESSIONS + 2
    files = {f"sessions/s{n:03}.md": session(f"Q{n}") for n in range(many)}
    root = new_project(tmp_path / "p", files)
    assert runner_threads(root) == 0  # all new, none names a model
    (root / "sessions" / "m.md").write_text(ASKS)
    assert runner_threads(root) == 16  # one of them names one
    built = doit(root)
    assert built.code == 0, built.out + built.err
    assert "An answer." in (root / ".domarkx" / "exports" / "m.md").read_text()
    assert runner_threads(root) == 16  # built (no-op): threads, as for any small build
    touch_all(root, "s*.md")
    assert runner_threads(root) == 16  # m.md, not edited, is marked as asking
    (root / "sessions" / "m.md").write_text(session("No model any more"))
    assert runner_threads(root) == 0  # read again: it asks no more
    assert doit(root).code == 0
    touch_all(root)
    assert runner_threads(root) == 0  # no mark left
    (root / "sessions" / "m.md").write_text(ASKS)
    monkeypatch.setenv("DOMARKX_LLM_CONCURRENCY", "4")
    assert runner_threads(root) == 4  # the user's choice stands


def test_an_edit_keeps_the_thread_runner(tmp_path, monkeypatch):
    # Its tasks wait for the worker that builds it while doit checks the others.
    monkeypatch.delenv("DOMARKX_LLM_CONCURRENCY", raising=False)
    root = new_project(tmp_path / "p", {"sessions/a.md": session("A")})
    assert runner_threads(root) == 16
