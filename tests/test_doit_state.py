"""doit's state survives SIGKILL and a concurrent watch (the journaled backend, ``db.py``)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES
from domarkx.pipeline.db import JournalDB
from tests.support import (
    OWN_STORE,
    WatchProcess,
    doit,
    new_project,
    save,
    saved_state,
    session,
    spawn,
)

STAGES = ("parse", "expand", "snapshot", "run", "export")


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


@pytest.mark.slow(4)
@pytest.mark.parametrize(
    "runner",
    [pytest.param({}, id="threads"), pytest.param({"DOMARKX_LLM_CONCURRENCY": "1"}, id="serial")],
)
def test_after_sigkill_the_next_build_redoes_only_unfinished_tasks(tmp_path, runner):
    count = 12
    root = new_project(tmp_path / "p", sessions(count, "import time\ntime.sleep(0.2)\nprint(1)"))
    proc = spawn(root, "doit", env={**OWN_STORE, **runner}, stderr=None)
    runs = root / ".domarkx" / BUILD_CACHES / "run"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(runs.glob("*.json"))) < count // 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # What finished is what doit's state holds (in threads, tasks end in any order).
    finished = set(saved_state(root))
    finished_runs = {t.split(":", 1)[1] for t in finished if t.startswith("run:")}
    assert 0 < len(finished_runs) < count, finished
    again = doit(root, env=runner)
    assert again.code == 0, again.out + again.err
    redone = again.executed
    assert not (redone & finished), redone & finished
    every = {f"{stage}:s{i:02d}" for stage in STAGES for i in range(count)}
    assert redone == every - finished
    assert doit(root).executed == set()


def test_a_torn_journal_line_is_left_out(tmp_path):
    from doit.dependency import JSONCodec

    path = str(tmp_path / "state.json")
    db = JournalDB(path, JSONCodec())
    db.set("a", "x", 1)  # the state of file x, which task a depends on
    db.set("a", "deps:", ["x"])
    db.set("b", "x", 2)
    db.set("b", "deps:", ["x"])
    with open(path + ".journal", "ab") as handle:
        handle.write(b'["s", "c", "deps:", ["h"')  # a kill in the middle of a write
    again = JournalDB(path, JSONCodec())
    assert again.get("a", "x") == 1 and again.get("b", "x") == 2 and not again.in_("c")
    again.set("c", "deps:", ["h"])  # appends after the cut, not after the torn bytes
    again.dump()
    lines = Path(path + ".journal").read_bytes().splitlines()
    assert [json.loads(line)[1] for line in lines] == ["a", "a", "b", "b", "c"]
    final = JournalDB(path, JSONCodec())
    assert {task: final.in_(task) for task in "abc"} == {"a": True, "b": True, "c": True}


def test_the_journal_is_folded_into_the_state_file_once_it_grows(tmp_path):
    # An edit appends a few lines and leaves them (rewriting the whole state for
    # them would cost more than the edit); past a tenth of the file, they are folded.
    from doit.dependency import JSONCodec

    from domarkx.pipeline.db import FOLD_MIN

    path = str(tmp_path / "state.json")
    journal = Path(path + ".journal")
    sizes = []
    for run in range(400):
        db = JournalDB(path, JSONCodec())
        db.set(f"task{run % 50}", "value", "x" * 400 + str(run))  # a file's state
        db.set(f"task{run % 50}", "deps:", ["value"])
        db.dump()
        sizes.append(journal.stat().st_size if journal.exists() else 0)
    assert 0 < sizes[0] < FOLD_MIN  # the first runs leave their lines in the journal
    assert 0 in sizes  # and one of them folded it
    assert max(sizes) <= FOLD_MIN + 1000
    state = json.loads(Path(path).read_text())
    final = JournalDB(path, JSONCodec())
    assert final.get("task49", "value") == "x" * 400 + "399"
    assert len(state) == 50


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


@pytest.mark.parametrize("command", [["forget"], ["forget", "--all"], ["clean", "--forget"]])
def test_forget_while_a_build_runs_is_refused_and_the_journal_stays(tmp_path, command):
    # The first session's block ends at once; the others say they started, then wait
    # until the test has tried to forget (a file appears): the build is surely still
    # running then, and ends at once after.
    running, gate = tmp_path / "held-block-started", tmp_path / "forget-tried"
    held = (
        f"import pathlib, time\npathlib.Path({str(running)!r}).touch()\n"
        f"for _ in range(6000):\n    if pathlib.Path({str(gate)!r}).exists():\n"
        "        break\n    time.sleep(0.01)\n"
    )
    files = {
        f"sessions/s{i:02d}.md": session(f"Q{i}", (held if i else "") + f"print({i})")
        for i in range(3)
    }
    root = new_project(tmp_path / "p", files)
    proc = spawn(root, "doit", env=OWN_STORE, stderr=None)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not running.exists():
            time.sleep(0.02)  # a build under way: snapshots done, a run going on
        before = saved_state(root)
        assert before and proc.poll() is None
        refused = doit(root, *command, process=True)
        gate.touch()
        assert refused.code != 0
        lines = [line for line in refused.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "another build is running in this project" in lines[0], lines
        assert "nothing was forgotten" in lines[0]
        assert saved_state(root).items() >= before.items()  # nothing forgotten
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert doit(root).executed == set()  # the build's state is whole
    assert doit(root, *command, process=True).code == 0  # once it is over, it forgets
    assert doit(root).executed  # and the next build runs again
