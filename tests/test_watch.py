"""``domarkx watch``: a real watch process in a tmp project, edited as an editor would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES, Layout
from domarkx.pipeline.watch import Watcher
from tests.support import WatchProcess, new_project, output_of, save, session


def wait_for_change(path: Path, old: str | None, timeout: float) -> float:
    """Seconds until ``path`` holds something other than ``old``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if path.read_text() != old:
                return time.monotonic() - started
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"{path} did not change within {timeout} s")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return new_project(
        tmp_path / "project",
        {
            "sessions/_common.md": "Common words.\n",
            "sessions/a.md": session("A [@c](domarkx://include?path=_common.md)"),
            "sessions/b.md": session("B"),
        },
    )


def test_watch_rebuilds_on_save_survives_broken_documents_and_stops_on_ctrl_c(root):
    watch = WatchProcess(root)
    try:
        watch.expect("built 2 sessions up to snapshot")
        watch.expect("watching sessions")
        snapshot_id = root / ".domarkx" / BUILD_CACHES / "snapshot/b.id"
        old = snapshot_id.read_text()

        save(root / "sessions/b.md", session("B, edited"))
        wait_for_change(snapshot_id, old, 30)  # how soon: bench/watch_latency.py
        line = watch.expect("sessions/b.md changed")
        assert "rebuilt b up to snapshot" in line
        assert not (root / ".domarkx/exports/b.md").exists()  # snapshots only by default

        # An included file rebuilds the sessions that include it, and only those.
        old_a, old_b = (
            (root / ".domarkx" / BUILD_CACHES / "snapshot/a.id").read_text(),
            snapshot_id.read_text(),
        )
        save(root / "sessions/_common.md", "Common words, edited.\n")
        line = watch.expect("sessions/_common.md changed")
        assert "rebuilt a up to snapshot" in line
        assert (root / ".domarkx" / BUILD_CACHES / "snapshot/a.id").read_text() != old_a
        assert snapshot_id.read_text() == old_b

        save(root / "sessions/b.md", "---\ntitle: [unclosed\n---\n")
        line = watch.expect("sessions/b.md changed")
        assert "failed: b" in line
        detail = watch.expect("parse:b:")
        assert "sessions/b.md:" in detail

        save(root / "sessions/b.md", session("B, fixed"))
        assert "rebuilt b" in watch.expect("sessions/b.md changed")

        (root / "sessions/new.md").write_text(session("New"))
        assert "rebuilt new" in watch.expect("sessions/new.md changed")
        (root / "sessions/new.md").unlink()
        watch.expect("removed sessions/new.md")
    finally:
        code = watch.stop()
    assert code == 0
    assert watch.expect("stopped")


def test_watch_until_export(root):
    watch = WatchProcess(root, "--until", "export")
    try:
        watch.expect("watching")
        export = root / ".domarkx/exports/b.md"
        old = export.read_text()
        save(root / "sessions/b.md", session("B", "print('from watch')"))
        wait_for_change(export, old, 10)
        watch.expect("rebuilt b up to export")
        assert output_of(export.read_text()) == "from watch\n"
    finally:
        assert watch.stop() == 0


def test_what_a_change_touches(root, tmp_path):
    watcher = Watcher(Layout.at(str(root)))
    watcher.includes = {"a": ["sessions/_common.md"], "c": ["shared/intro.md"]}
    (root / "shared").mkdir()
    for name in ("a", "c"):  # sessions that exist (a deleted one is not rebuilt)
        (root / f"sessions/{name}.md").write_text(session(name))
    assert watcher.affected([str(root / "sessions/_common.md")]) == ({"a"}, set())
    assert watcher.affected([str(root / "sessions/b.md")]) == ({"b"}, set())
    assert watcher.affected([str(root / "sessions/gone.md")]) == (set(), {"gone"})
    assert watcher.affected([str(root / "sessions/.b.md.swp")]) == (set(), set())
    assert watcher.affected([str(root / "shared/intro.md")]) == ({"c"}, set())
    assert watcher.watched_paths() == [str(root / "sessions"), str(root / "shared")]


def test_watch_does_not_report_an_editors_temporary_files(root):
    watch = WatchProcess(root)
    try:
        watch.expect("watching sessions")
        sessions = root / "sessions"
        # What vim, emacs and others write beside the file they save, in one batch with it.
        for name in ("4913", "b.md~", ".#b.md", ".b.md.swp", "#b.md#"):
            (sessions / name).write_text("editor's own\n")
        save(sessions / "b.md", session("B, saved by an editor"))
        line = watch.expect("changed")
        for name in ("4913", "b.md~", ".#b.md", ".b.md.swp", "#b.md#"):
            (sessions / name).unlink(missing_ok=True)
        time.sleep(0.5)  # the deletions' batch: nothing to say about it
        (sessions / "a.md").write_text(session("A again"))
        last = watch.expect("sessions/a.md changed")
    finally:
        assert watch.stop() == 0
    assert line.split(" ", 1)[1].startswith("sessions/b.md changed:"), line
    assert "rebuilt b" in line
    shown = "\n".join([*watch.seen, last])
    for name in ("4913", "b.md~", ".#b.md", ".b.md.swp", "#b.md#"):
        assert name not in shown, shown
