"""doit's state survives SIGKILL and a concurrent watch (the journaled backend, ``db.py``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_pipeline import _env, doit, new_project, session
from test_watch import WatchProcess, save

from domarkx.pipeline.db import JournalDB


def sessions(count: int, code: str = "print(1)") -> dict[str, str]:
    return {
        f"sessions/s{i:02d}.md": session(f"Q{i}", code.replace("1", str(i))) for i in range(count)
    }


def test_the_backend_is_doits_plugin_not_a_patch():
    from importlib.metadata import entry_points

    from doit import dependency

    found = {e.name: e.value for e in entry_points(group="doit.BACKEND")}
    assert found.get("domarkx") == "domarkx.pipeline.db:JournalDB"
    assert not getattr(dependency.JsonDB.dump, "domarkx", False)


def test_after_sigkill_the_next_build_redoes_only_unfinished_tasks(tmp_path):
    count = 12
    root = new_project(tmp_path / "p", sessions(count, "import time\ntime.sleep(0.2)\nprint(1)"))
    # doit's serial runner: every parse, expand and snapshot ends before the first
    # run begins (the thread runner starts a session's run once its snapshot is done).
    serial = _env({"DOMARKX_LLM_CONCURRENCY": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit"], cwd=root, env=serial, stdout=subprocess.PIPE, text=True
    )
    runs = root / ".domarkx" / "cache" / "run"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(runs.glob("*.json"))) < count // 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = {p.stem for p in runs.glob("*.json")}
    assert 0 < len(finished) < count, finished
    again = doit(root)
    assert again.code == 0, again.out + again.err
    redone = again.executed
    # Every parse, expand and snapshot had finished: none is redone.
    assert not {t for t in redone if t.split(":")[0] in ("parse", "expand", "snapshot")}, redone
    redone_runs = {t.split(":", 1)[1] for t in redone if t.startswith("run:")}
    # At most the one run in flight when the kill came is redone among the finished.
    assert len(redone_runs & finished) <= 1, redone_runs & finished
    assert redone_runs >= {f"s{i:02d}" for i in range(count)} - finished
    assert doit(root).executed == set()


def test_a_torn_journal_line_is_left_out(tmp_path):
    from doit.dependency import JSONCodec

    path = str(tmp_path / "state.json")
    db = JournalDB(path, JSONCodec())
    db.set("a", "x", 1)
    db.set("a", "deps:", ["f"])
    db.set("b", "x", 2)
    db.set("b", "deps:", ["g"])
    with open(path + ".journal", "ab") as handle:
        handle.write(b'["s", "c", "deps:", ["h"')  # a kill in the middle of a write
    again = JournalDB(path, JSONCodec())
    assert again.get("a", "x") == 1 and again.get("b", "x") == 2 and not again.in_("c")
    again.set("c", "deps:", ["h"])  # appends after the cut, not after the torn bytes
    again.dump()
    state = json.loads(Path(path).read_text())
    assert set(state) == {"a", "b", "c"}
    assert not Path(path + ".journal").exists()


def test_doit_while_watch_runs_keeps_doits_state(tmp_path):
    count = 8
    root = new_project(tmp_path / "p", sessions(count))
    watch = WatchProcess(root)
    try:
        watch.expect(f"built {count} sessions up to snapshot")
        watch.expect("watching sessions")
        full = doit(root)  # builds the runs and exports while the watch waits
        assert full.code == 0, full.out
        save(root / "sessions" / "s00.md", session("Q0 edited", "print(0)"))
        watch.expect("sessions/s00.md changed")
    finally:
        watch.stop()
    after = doit(root)
    assert after.code == 0, after.out
    assert after.executed == {"run:s00", "export:s00"}, after.executed
