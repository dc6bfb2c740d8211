"""The doit task graph, through real ``doit`` and ``domarkx build`` runs in tmp projects.

Every test builds a project folder with a one-line ``dodo.py`` and runs the
real commands as a user would (in this interpreter, each in its own folder
and environment; in a subprocess where a process boundary is the point);
what ran is read from doit's report (``.  task`` lines) and from the files
the stages wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domarkx.data import lock
from domarkx.data.layout import BUILD_CACHES, CACHE_FORMAT, STAGES
from tests.support import (
    doit,
    domarkx,
    make_files,
    new_project,
    output_of,
    process_env,
    saved_state,
    session,
    spawn,
    stage_tasks,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "project"


# Building and staying up to date -------------------------------------------------
def test_doit_builds_every_session_then_says_all_is_up_to_date(root):
    new_project(
        root,
        {
            "sessions/a.md": session("Six times seven?", "print(6 * 7)"),
            "sessions/sub/b.md": session("Hello"),
        },
    )
    first = doit(root)
    assert first.code == 0, first.out + first.err
    assert first.executed == stage_tasks("a", "sub/b")
    export = (root / ".domarkx/exports/a.md").read_text()
    assert output_of(export) == "42\n"
    assert (root / ".domarkx/exports/sub/b.md").is_file()

    second = doit(root)
    assert second.code == 0
    assert second.executed == set()
    assert "nothing to do: all 10 tasks up to date" in second.out


def test_doit_list_info_and_stages(root):
    new_project(root, {"sessions/a.md": session("Hi", "print(1)"), "sessions/_part.md": "x\n"})
    listed = doit(root, "list", "--all")
    assert listed.code == 0
    names = {line.split()[0] for line in listed.out.splitlines() if line.strip()}
    assert stage_tasks("a") <= names
    assert not any("_part" in name for name in names)  # partials are not sessions

    snap = doit(root, "snapshot")
    assert snap.code == 0
    assert snap.executed == stage_tasks("a", stages=("parse", "expand", "snapshot"))
    snapshot_id = (root / ".domarkx" / BUILD_CACHES / "snapshot/a.id").read_text().split()[0]
    assert (root / f".domarkx/snapshots/{snapshot_id}.json").is_file()
    assert (root / ".domarkx/tags/a").read_text().strip() == snapshot_id
    assert not (root / ".domarkx/exports/a.md").exists()

    info = doit(root, "info", "export:a")
    assert info.code == 1  # doit info: 1 for a task that is not up to date
    assert "The following targets do not exist:\n    - .domarkx/exports/a.md" in info.out
    assert f".domarkx/{BUILD_CACHES}/run/a.json" in info.out
    assert doit(root).code == 0
    assert doit(root, "info", "export:a").code == 0


def test_include_edits_rebuild_exactly_the_sessions_that_include(root):
    include = "[@common](domarkx://include?path={})"
    new_project(
        root,
        {
            "sessions/_common.md": "Common words.\n",
            "sessions/_mid.md": "Middle, then " + include.format("_common.md") + "\n",
            "sessions/_other.md": "Other words.\n",
            "sessions/direct.md": session("Q " + include.format("_common.md")),
            "sessions/nested/deep.md": session("Q " + include.format("../_mid.md")),
            "sessions/other.md": session("Q " + include.format("_other.md")),
            "sessions/plain.md": session("Q"),
        },
    )
    assert doit(root).code == 0
    time.sleep(0.01)
    (root / "sessions/_common.md").write_text("Common words, edited.\n")
    rebuilt = doit(root)
    assert rebuilt.code == 0, rebuilt.out
    dependents = ("direct", "nested/deep")
    assert rebuilt.executed == stage_tasks(
        *dependents, stages=("expand", "snapshot", "run", "export")
    )
    for name in dependents:
        assert "Common words, edited." in (root / f".domarkx/exports/{name}.md").read_text()
    assert doit(root).executed == set()

    # Dropping an include drops the dependency: editing the file rebuilds nothing.
    (root / "sessions/other.md").write_text(session("No include now"))
    assert doit(root).executed == stage_tasks("other")
    (root / "sessions/_other.md").write_text("Edited, but nobody includes me.\n")
    assert doit(root).executed == set()


def test_a_missing_include_fails_its_session_only_and_recovers(root):
    new_project(
        root,
        {
            "sessions/_common.md": "Common.\n",
            "sessions/a.md": session("Q [@c](domarkx://include?path=_common.md)"),
            "sessions/b.md": session("Q"),
        },
    )
    assert doit(root).code == 0
    (root / "sessions/_common.md").unlink()
    (root / "sessions/b.md").write_text(session("Q, edited"))
    broken = doit(root, "--continue")
    assert broken.code != 0
    assert "FAILED expand:a: sessions/a.md:" in broken.out
    assert "included file `_common.md` not found" in broken.out
    assert "Traceback" not in broken.out + broken.err
    assert stage_tasks("b", stages=("parse", "expand", "snapshot")) <= broken.executed
    assert "Q, edited" in (root / ".domarkx/exports/b.md").read_text()

    (root / "sessions/_common.md").write_text("Back again.\n")
    fixed = doit(root)
    assert fixed.code == 0, fixed.out
    assert "Back again." in (root / ".domarkx/exports/a.md").read_text()


def test_a_broken_session_fails_its_own_tasks_and_the_others_build(root):
    new_project(
        root,
        {
            "sessions/broken.md": "---\ntitle: [unclosed\n---\n\n## user\n\nHi\n",
            "sessions/good.md": session("Fine", "print('ok')"),
        },
    )
    result = doit(root, "--continue")
    assert result.code != 0
    assert re.search(r"FAILED parse:broken: sessions/broken\.md:\d+: ", result.out), result.out
    assert "Traceback" not in result.out + result.err
    assert stage_tasks("good") <= result.executed
    assert output_of((root / ".domarkx/exports/good.md").read_text()) == "ok\n"
    assert "4 not run (a dependency failed)" in result.out

    stopped = doit(root)  # without --continue doit stops at the first failure, as usual
    assert stopped.code != 0
    assert stopped.executed == {"parse:broken"}


def test_adding_and_deleting_a_session(root):
    new_project(root, {"sessions/a.md": session("A")})
    assert doit(root).code == 0
    (root / "sessions/new.md").write_text(session("New", "print('new')"))
    added = doit(root)
    assert added.code == 0
    assert added.executed == stage_tasks("new")
    assert output_of((root / ".domarkx/exports/new.md").read_text()) == "new\n"

    (root / "sessions/new.md").unlink()
    after = doit(root)
    assert after.code == 0, after.out
    assert after.executed == set()
    assert "new" not in doit(root, "list", "--all").out


# The execution cache --------------------------------------------------------------
def test_a_prose_edit_resnapshots_and_reexports_but_executes_nothing(root):
    new_project(
        root,
        {"sessions/clock.md": session("What time is it?", "import time\nprint(time.time_ns())")},
    )
    assert doit(root).code == 0
    before = output_of((root / ".domarkx/exports/clock.md").read_text())
    old_id = (root / ".domarkx" / BUILD_CACHES / "snapshot/clock.id").read_text()

    (root / "sessions/clock.md").write_text(
        session("What time is it now, please?", "import time\nprint(time.time_ns())")
    )
    again = doit(root)
    assert again.code == 0
    assert again.executed == stage_tasks("clock")
    assert (root / ".domarkx" / BUILD_CACHES / "snapshot/clock.id").read_text() != old_id
    export = (root / ".domarkx/exports/clock.md").read_text()
    assert "What time is it now, please?" in export
    assert output_of(export) == before  # the block did not run again

    (root / "sessions/clock.md").write_text(
        session("Now?", "import time\nprint('t', time.time_ns())")
    )
    assert doit(root).code == 0
    assert output_of((root / ".domarkx/exports/clock.md").read_text()) != before


def test_clean_forget_and_parallel_builds(root):
    include = "[@c](domarkx://include?path=_common.md)"
    new_project(
        root,
        {
            "sessions/_common.md": "Common.\n",
            **{f"sessions/s{i}.md": session(f"Q{i} {include}", f"print({i})") for i in range(4)},
        },
    )
    parallel = doit(root, "-n", "2", "-P", "process")
    assert parallel.code == 0, parallel.out + parallel.err
    assert parallel.executed == stage_tasks(*(f"s{i}" for i in range(4)))
    assert doit(root).executed == set()  # include deps recorded by worker processes too

    exports = {i: (root / f".domarkx/exports/s{i}.md").read_text() for i in range(4)}
    cleaned = doit(root, "clean")
    assert cleaned.code == 0
    assert not (root / ".domarkx/exports/s0.md").exists()
    assert not (root / ".domarkx" / BUILD_CACHES / "parse/s0.json").exists()
    # Every file comes back: parse, run and export run; a cold build's worker, when this
    # process forks one, may have written the expand and snapshot files first.
    rebuilt = doit(root)
    assert rebuilt.code == 0
    assert stage_tasks(*(f"s{i}" for i in range(4)), stages=("parse", "run", "export")) <= (
        rebuilt.executed
    )
    assert {i: (root / f".domarkx/exports/s{i}.md").read_text() for i in range(4)} == exports
    assert doit(root).executed == set()

    assert doit(root, "forget").code == 0
    forgotten = doit(root)
    assert forgotten.code == 0
    assert forgotten.executed == stage_tasks(*(f"s{i}" for i in range(4)))
    assert output_of((root / ".domarkx/exports/s3.md").read_text()) == "3\n"


def test_params_are_dependencies(root):
    new_project(
        root,
        {
            "sessions/p.md": session("Hello [@user](domarkx://user)"),
            "sessions/f.md": "---\nparams:\n  user: fm\n---\n\n## user\n\nHi [@u](domarkx://user)\n",
            "sessions/plain.md": session("No parameter, [@d](domarkx://set?value=x)"),
        },
    )
    assert doit(root, "user=ana").code == 0
    assert "Hello ana" in (root / ".domarkx/exports/p.md").read_text()
    assert "Hi ana" in (root / ".domarkx/exports/f.md").read_text()  # the command line wins
    assert doit(root, "user=ana").executed == set()
    # A new value re-expands the sessions that looked the parameter up, and only them.
    bob = doit(root, "user=bob")
    assert bob.executed == stage_tasks("p", "f", stages=("expand", "snapshot", "run", "export"))
    assert "Hello bob" in (root / ".domarkx/exports/p.md").read_text()
    assert doit(root, "user=bob", "other=1").executed == set()
    # Without the variable, the front matter's value counts again.
    assert doit(root, "--continue").executed >= {"expand:p", "expand:f"}
    assert "Hi fm" in (root / ".domarkx/exports/f.md").read_text()

    built = domarkx(root, "build", "--param", "user=cy")
    assert built.code == 0, built.err
    assert "Hello cy" in (root / ".domarkx/exports/p.md").read_text()


# domarkx build ------------------------------------------------------------------------
def test_domarkx_build_runs_the_same_graph_from_any_folder(root):
    new_project(root, {"sessions/a.md": session("A", "print('a')"), "notes/x.txt": "x\n"})
    first = domarkx(root / "notes", "build", "snapshot")
    assert first.code == 0, first.err
    assert first.executed == stage_tasks("a", stages=("parse", "expand", "snapshot"))
    rest = domarkx(root, "build")
    assert rest.executed == stage_tasks("a", stages=("run", "export"))
    assert doit(root).executed == set()  # the same database as doit
    assert "nothing to do" in domarkx(root, "build").out


def test_domarkx_build_without_a_dodo(root):
    make_files({"sessions/a.md": session("A", "print('a')")}, root)
    result = domarkx(root, "build")
    assert result.code == 0, result.err
    assert output_of((root / ".domarkx/exports/a.md").read_text()) == "a\n"
    unknown = domarkx(root, "build", "no-such-task")
    assert unknown.code == 2
    assert 'Type "doit list"' in unknown.err


def test_check_mode_compares_exports_and_writes_none(root):
    new_project(root, {"sessions/a.md": session("A", "print('a')"), "sessions/b.md": session("B")})
    missing = domarkx(root, "build", "--check")
    assert missing.code == 1
    assert ".domarkx/exports/a.md: missing" in missing.err
    assert not (root / ".domarkx/exports").exists()

    assert domarkx(root, "build").code == 0
    ok = domarkx(root, "build", "--check")
    assert ok.code == 0, ok.err
    assert "every export matches the build (2 sessions)" in ok.out

    export = root / ".domarkx/exports/a.md"
    export.write_text(export.read_text().replace("## user", "## user\n\nhand edit"))
    edited = export.read_text()
    differs = domarkx(root, "build", "--check")
    assert differs.code == 1
    assert ".domarkx/exports/a.md: differs" in differs.err
    assert "-hand edit" in differs.err
    assert export.read_text() == edited

    assert domarkx(root, "build", "--always-execute", "export:a").code == 0
    (root / "sessions/b.md").unlink()
    stale = domarkx(root, "build", "--check")
    assert stale.code == 1
    assert ".domarkx/exports/b.md: no session makes it any more" in stale.err


# Reproducibility ------------------------------------------------------------------------
def test_two_builds_in_two_folders_write_identical_snapshots_and_exports(tmp_path):
    files = {
        "sessions/_common.md": "Built on [@d](domarkx://date).\n",
        "sessions/a.md": session("A [@c](domarkx://include?path=_common.md)", "print(2 + 2)"),
        "sessions/deep/b.md": session("B"),
    }
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    trees = []
    for folder in ("one", "two"):
        root = new_project(tmp_path / folder, files)
        assert doit(root, env=env).code == 0
        store = root / ".domarkx"
        trees.append(
            {
                path.relative_to(store).as_posix(): path.read_bytes()
                for sub in ("snapshots", "exports")
                for path in sorted((store / sub).rglob("*"))
                if path.is_file()
            }
        )
    assert trees[0] == trees[1]
    assert len(trees[0]) == 4
    assert b"Built on 2023-11-14." in trees[0]["exports/a.md"]


def test_a_cold_build_of_many_sessions_matches_one_task_at_a_time(tmp_path):
    # Enough sessions for the first parse task to hand the cold build to worker
    # processes (stages.PREBUILD_MIN); under `-P process` every task does its own.
    include = "[@c](domarkx://include?path=../_common.md)"
    files: dict = {"sessions/_common.md": "Common words.\n"}
    for n in range(80):
        extra = include if n % 7 == 0 else f"Plain {n}."
        files[f"sessions/g{n % 3}/s{n:02}.md"] = session(f"Question {n}", extra=extra)
    files["sessions/g1/s05.md"] = "---\ntitle: [unclosed\n---\n\n## user\n\nHi\n"
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    trees, runs = [], []
    for folder, args in (("batch", ()), ("alone", ("-n", "2", "-P", "process"))):
        root = new_project(tmp_path / folder, files)
        result = doit(root, *args, "--continue", "snapshot", env=env)
        assert result.code != 0
        assert "1 failed" in result.out, result.out
        assert re.search(r"FAILED parse:g1/s05: sessions/g1/s05\.md:\d+: ", result.out)
        runs.append(result.executed)
        store = root / ".domarkx"
        trees.append(
            {
                path.relative_to(store).as_posix(): path.read_bytes().replace(
                    str(root).encode(), b"ROOT"
                )
                for sub in ("snapshots", "tags", "cache")
                for path in sorted((store / sub).rglob("*"))
                if path.is_file()
            }
        )
        again = doit(root, "--continue", "snapshot", env=env)
        assert again.executed == {"parse:g1/s05"}
        (root / "sessions/_common.md").write_text("Common words, edited.\n")
        edited = doit(root, "--continue", "snapshot", env=env)
        includers = {f"g{n % 3}/s{n:02}" for n in range(0, 80, 7)}
        assert edited.executed == {"parse:g1/s05"} | stage_tasks(
            *includers, stages=("expand", "snapshot")
        )
    assert runs[0] == runs[1]
    assert trees[0] == trees[1]
    assert len([key for key in trees[0] if key.startswith("snapshots/")]) == 80


# Concurrency and faults ------------------------------------------------------------------
def test_a_second_build_is_refused_while_one_holds_the_lock(root):
    new_project(root, {"sessions/a.md": session("A")})
    path = str(root / ".domarkx/build.lock")
    lock.acquire(path)
    try:
        # Another process holds the lock (this one may take it again, see lock.py).
        refused = doit(root, process=True)
        assert refused.code != 0
        assert "another build is running in this project" in refused.out
        assert refused.executed == set()
        also = domarkx(root, "build", process=True)
        assert also.code == 1
        assert "another build is running in this project" in also.err
        assert "Traceback" not in also.err
        assert doit(root, "list").code == 0  # reading the task list needs no lock
    finally:
        lock.release(path)
    assert doit(root).code == 0


def test_two_builds_at_once_one_waits_out_and_the_store_stays_whole(root):
    new_project(
        root,
        {
            f"sessions/s{i}.md": session(f"Q{i}", f"import time\ntime.sleep(0.3)\nprint({i})")
            for i in range(3)
        },
    )
    first = spawn(root, "doit", env={"DOMARKX_HOME": None}, stderr=None)
    deadline = time.monotonic() + 30
    while not (root / ".domarkx" / BUILD_CACHES / "parse").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = doit(root)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert second.code != 0
    assert "another build is running" in second.out
    final = doit(root)
    assert final.code == 0 and final.executed == set()
    for i in range(3):
        assert output_of((root / f".domarkx/exports/s{i}.md").read_text()) == f"{i}\n"


def test_a_build_killed_mid_way_leaves_whole_files_and_the_next_finishes(root):
    gate = root.parent / "gate"
    started = root.parent / "started"
    gate.write_text("closed")
    code = (
        "import pathlib, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        f"while pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.02)\n"
        "print('finished')"
    )
    new_project(
        root,
        {"sessions/a.md": session("A", "print('a')"), "sessions/z.md": session("Z", code)},
    )
    build = subprocess.Popen(
        [sys.executable, "-m", "doit", "--continue"],
        cwd=root,
        env=process_env({"DOMARKX_HOME": None}),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.exists()
    os.killpg(build.pid, signal.SIGKILL)
    build.wait(timeout=10)
    gate.unlink()  # lets the orphaned block end

    store = root / ".domarkx"
    leftovers = [p for p in store.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    database = store / "doit.json"
    if database.exists():
        json.loads(database.read_text())
    for path in (store / "snapshots").glob("*.json"):
        json.loads(path.read_text())

    resumed = doit(root)
    assert resumed.code == 0, resumed.out
    assert output_of((store / "exports/z.md").read_text()) == "finished\n"
    assert doit(root).executed == set()


# The progress display ------------------------------------------------------------------
def test_progress_line_on_a_terminal_only(root):
    import pty

    new_project(root, {f"sessions/s{i}.md": session(f"Q{i}") for i in range(3)})
    plain = doit(root, "snapshot")
    assert "\r" not in plain.out and "\x1b[" not in plain.out

    doit(root, "forget")
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", "snapshot"],
        cwd=root,
        # The serial runner paints after each task in order; the thread runner
        # may skip a state between two repaints.
        env=process_env({"DOMARKX_HOME": None, "DOMARKX_LLM_CONCURRENCY": "1"}),
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0
    # Sessions done and time left, which a user wants; tasks only in passing.
    assert re.search(r"\[\d/3 sessions done\] \d+\.\d s", shown), repr(shown)
    assert re.search(r"~\d+ s left  \(task \d/9\) \w+:s\d", shown), repr(shown)
    assert "[2/3 sessions done]" in shown, repr(shown)
    assert "\x1b[K" in shown
    assert re.search(r"\x1b\[Kdomarkx: 9 run \(\d+\.\d+ s\)\s*$", shown), repr(shown)


# A new domarkx version ------------------------------------------------------------
AS_VERSION = """\
import sys
import domarkx
domarkx.__version__ = sys.argv.pop(1)  # what an upgraded install would say
from doit.doit_cmd import DoitMain
from doit.cmd_base import ModuleTaskLoader
import dodo
sys.exit(DoitMain(ModuleTaskLoader(dodo)).run(sys.argv[1:]))
"""


def doit_as_version(root: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", AS_VERSION, version],
        cwd=root,
        env=process_env({"DOMARKX_HOME": None}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_new_domarkx_version_rebuilds_every_stage_and_removes_the_old_caches(root):
    new_project(root, {"sessions/a.md": session("A question"), "sessions/b.md": session("B")})
    cache = root / ".domarkx" / "cache"
    first = doit_as_version(root, "1.0.0")
    assert first.returncode == 0, first.stderr
    assert (cache / f"v1.0.0-{CACHE_FORMAT}" / "parse" / "a.json").is_file()
    keys = sorted((cache / "run" / "_keys").iterdir())  # the execution cache
    assert keys
    # Stage files as an older layout left them, beside the execution cache.
    (cache / "parse").mkdir()
    (cache / "parse" / "a.json").write_text("{}")
    (cache / "run" / "a.json").write_text("{}")

    upgraded = doit_as_version(root, "1.1.0")
    assert upgraded.returncode == 0, upgraded.stderr
    executed = {line[3:] for line in upgraded.stdout.splitlines() if line.startswith(".  ")}
    assert executed == {f"{stage}:{name}" for stage in STAGES for name in ("a", "b")}
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("v")) == [
        f"v1.1.0-{CACHE_FORMAT}"
    ]
    assert not (cache / "parse").exists() and not (cache / "run" / "a.json").exists()
    assert sorted((cache / "run" / "_keys").iterdir()) == keys  # kept, and it answered
    # doit's state keeps no entry of the old folder's files (it would grow with each version).
    assert not [k for t in saved_state(root).values() for k in t if "v1.0.0" in k]
    export = (root / ".domarkx" / "exports" / "a.md").read_text()
    assert "A question" in export

    again = doit_as_version(root, "1.1.0")
    assert again.returncode == 0, again.stderr
    assert not [line for line in again.stdout.splitlines() if line.startswith(".  ")]


def test_a_grant_taken_back_from_the_configuration_reaches_a_built_include(root):
    # `[includes] allow` let a session include a dotfile; taking it back must not leave
    # the built expansion standing: a session that includes files depends on the
    # configuration files, and only such a session is expanded again.
    new_project(
        root,
        {
            ".notes": "Kept aside.\n",
            "sessions/inc.md": session("Q", extra="[@n](domarkx://include?path=../.notes)"),
            "sessions/plain.md": session("A plain question"),
            "domarkx.toml": '[includes]\nallow = [".notes"]\n',
        },
    )
    assert doit(root).code == 0
    assert "Kept aside." in (root / ".domarkx/exports/inc.md").read_text()
    assert doit(root).executed == set()  # the dependency list the task saved is the one loaded
    with open(root / "domarkx.toml", "a") as handle:
        handle.write("# a comment changes nothing the sessions use\n")
    unchanged = doit(root)
    assert unchanged.code == 0
    assert unchanged.executed == {"expand:inc"}  # the same expansion: the rest stops there
    (root / "domarkx.toml").write_text("[includes]\nallow = []\n")
    refused = doit(root)
    assert refused.code == 1
    assert "sessions/inc.md" in refused.out + refused.err
    assert "`.notes` is a dotfile" in refused.out + refused.err
    assert doit(root).code == 1  # and it stays refused
