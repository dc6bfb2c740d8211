"""The build daemon: later builds take their workers from it, and it cleans up after itself.

Real ``doit`` processes in real projects; the daemon is a real background
process with its socket in a private folder of the test's own. What is
checked is what a user sees: the exports, the store, the process table, and
``domarkx daemon status``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domarkx.data.layout import BUILD_CACHES
from domarkx.pipeline import daemon
from tests.support import (
    EDITED,
    OWN_STORE,
    Env,
    alive,
    children_of,
    doit,
    domarkx,
    new_project,
    process_env,
    session,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform != "linux", reason="the daemon forks its workers"
)

EDITS = ("plain", "code", "includes", "deep/other")


def sockets(runtime: Path) -> list[Path]:
    return sorted((runtime / "domarkx").glob("d-*.sock"))


def statuses(runtime: Path) -> list[dict[str, Any]]:
    found = [daemon.ask(str(path), daemon.STATUS) for path in sockets(runtime)]
    return [status for status in found if status is not None]


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A private folder for the daemons' sockets (short: a socket's path is at most 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="dmx-"))
    folder.chmod(0o700)
    try:
        yield folder
    finally:
        for status in statuses(folder):
            os.kill(int(status["pid"]), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def on(runtime: Path, **extra: str | None) -> Env:
    return {"DOMARKX_DAEMON": "1", "XDG_RUNTIME_DIR": str(runtime), "CI": None, **extra}


def edit(root: Path, names: tuple[str, ...] = EDITS) -> None:
    for name in names:
        with open(root / "sessions" / f"{name}.md", "a") as handle:
            handle.write("\nOne more line.\n")


def store_files(root: Path) -> dict[str, bytes]:
    """The snapshots, tags and exports a build made (what is the same from run to run)."""
    store = root / ".domarkx"
    return {
        path.relative_to(store).as_posix(): path.read_bytes().replace(bytes(root), b"ROOT")
        for sub in (
            "snapshots",
            "tags",
            "exports",
            f"{BUILD_CACHES}/parse",
            f"{BUILD_CACHES}/expand",
        )
        for path in sorted((store / sub).rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow(5)
def test_an_edit_built_by_the_daemons_worker_is_the_build_without_it(tmp_path, runtime):
    built = {}
    for switch in ("on", "off"):
        root = new_project(tmp_path / switch, EDITED)
        # SOURCE_DATE_EPOCH: the snapshots' dates, the same in both.
        switched = on(runtime) if switch == "on" else {"DOMARKX_DAEMON": "0"}
        env = {**switched, "SOURCE_DATE_EPOCH": "1700000000"}
        first = doit(root, env=env, process=True)
        assert first.code == 0, first.err
        if switch == "on":
            # The first build found no daemon: it started one for the next build.
            assert wait_for(lambda: statuses(runtime), within=30)
            assert statuses(runtime)[0]["served"] == 0
        edit(root)
        second = doit(root, env=env, process=True)
        assert second.code == 0, second.err
        assert "One more line." in (root / ".domarkx/exports/deep/other.md").read_text()
        assert "42" in (root / ".domarkx/exports/code.md").read_text()
        again = doit(root, env=env, process=True)
        assert again.code == 0 and again.executed == set(), again.out
        built[switch] = store_files(root)
    (status,) = statuses(runtime)
    assert status["served"] == 1  # the edit's one worker
    assert status["current"] is True
    assert built["on"] == built["off"]


@pytest.mark.slow(4)
def test_the_daemons_worker_takes_each_builds_folder_and_environment(tmp_path, runtime):
    first = new_project(tmp_path / "first", EDITED)
    assert doit(first, env=on(runtime), process=True).code == 0
    assert wait_for(lambda: statuses(runtime), within=30)
    # Another project, whose store is elsewhere (DOMARKX_HOME): same daemon, its own store.
    other = new_project(tmp_path / "other", {"sessions/solo.md": session("Solo question")})
    elsewhere = tmp_path / "elsewhere-store"
    result = doit(other, env=on(runtime, DOMARKX_HOME=str(elsewhere)), process=True)
    assert result.code == 0, result.err
    assert statuses(runtime)[0]["served"] == 1
    assert "Solo question" in (elsewhere / "exports" / "solo.md").read_text()
    assert not (other / ".domarkx" / "exports").exists()
    assert not (first / ".domarkx" / "exports" / "solo.md").exists()


GENERATES_TASKS = """\
import sys
import dodo
dodo.DOIT_CONFIG
tasks = list(dodo.task_sessions())  # generating the tasks hires the daemon's worker
print("generated", flush=True)
sys.stdin.readline()
"""


@pytest.mark.slow(4)
def test_a_daemons_worker_dies_with_a_killed_build(tmp_path, runtime):
    root = new_project(tmp_path / "p", EDITED)
    assert doit(root, env=on(runtime), process=True).code == 0
    assert wait_for(lambda: statuses(runtime), within=30)
    (status,) = statuses(runtime)
    edit(root)
    build = subprocess.Popen(
        [sys.executable, "-c", GENERATES_TASKS],
        cwd=root,
        env=process_env({**OWN_STORE, **on(runtime)}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert build.stdout is not None
    try:
        assert build.stdout.readline() == "generated\n"
        # Its worker waits for the run to start, a child of the daemon.
        assert wait_for(lambda: children_of(status["pid"]), within=10)
        workers = children_of(status["pid"])
        build.kill()
        build.wait()
        assert wait_for(lambda: not any(alive(w) for w in workers), within=10)
    finally:
        build.kill()
        build.wait()
    assert alive(status["pid"])  # the daemon itself serves on
    # Nothing was written before the run: the next build does the edit in full.
    result = doit(root, env=on(runtime), process=True)
    assert result.code == 0, result.err
    assert "One more line." in (root / ".domarkx/exports/plain.md").read_text()


def test_no_daemon_starts_when_switched_off_on_ci_or_in_a_folder_others_may_write(
    tmp_path, runtime
):
    shared = Path(tempfile.mkdtemp(prefix="dmx-"))
    (shared / "domarkx").mkdir(mode=0o777)
    (shared / "domarkx").chmod(0o777)
    cases: dict[str, tuple[Env, Path]] = {
        "off": ({"DOMARKX_DAEMON": "0", "XDG_RUNTIME_DIR": str(runtime)}, runtime),
        "ci": ({"DOMARKX_DAEMON": None, "CI": "true", "XDG_RUNTIME_DIR": str(runtime)}, runtime),
        "shared": (on(shared), shared),
    }
    try:
        for name, (env, folder) in cases.items():
            root = new_project(tmp_path / name, EDITED)
            assert doit(root, env=env, process=True).code == 0
            edit(root)
            assert doit(root, env=env, process=True).code == 0
            assert "One more line." in (root / ".domarkx/exports/plain.md").read_text()
            assert sockets(folder) == [], name
        status = domarkx(tmp_path / "shared", "daemon", "status", env=on(shared), process=True)
        assert status.code == 0
        assert "no build daemon is running (no private folder for daemons)" in status.out
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.slow(4)
def test_an_idle_daemon_exits_and_stop_ends_a_running_one(tmp_path, runtime):
    root = new_project(tmp_path / "p", EDITED)
    # Idle for 4 s: long enough to be seen up on a loaded machine, short for a test.
    assert doit(root, env=on(runtime, DOMARKX_DAEMON_IDLE="4"), process=True).code == 0
    assert wait_for(lambda: statuses(runtime), within=30)
    pid = statuses(runtime)[0]["pid"]
    # Asking for its status all along keeps no daemon up: only builds do.
    assert wait_for(lambda: not statuses(runtime), within=30)
    assert wait_for(lambda: not alive(pid), within=10)
    assert list((runtime / "domarkx").iterdir()) == []  # no socket, lock or empty log left

    edit(root)
    assert doit(root, env=on(runtime), process=True).code == 0
    assert wait_for(lambda: statuses(runtime), within=30)
    pid = statuses(runtime)[0]["pid"]
    listed = domarkx(root, "daemon", "status", env=on(runtime), process=True)
    assert f"daemon {pid}: " in listed.out and "current" in listed.out
    stopped = domarkx(root, "daemon", "stop", env=on(runtime), process=True)
    assert f"stopped daemon {pid}" in stopped.out
    assert wait_for(lambda: not alive(pid), within=10)
    assert sockets(runtime) == []
    after = domarkx(root, "daemon", "status", env=on(runtime), process=True)
    assert "no build daemon is running" in after.out


def status_as_nobody(path: Path) -> bytes:
    """What a process of another user (``nobody``) gets when it asks the daemon for its status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user: a forked child, as no interpreter here is theirs to run
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            link.settimeout(10)
            link.connect(str(path))
            os.write(write_end, b"connected; ")
            try:
                link.sendall(struct.pack("<cI", b"S", 0))
                os.write(write_end, b"answer: " + link.recv(4096))
            except (BrokenPipeError, ConnectionResetError):
                os.write(write_end, b"hung up")
        except BaseException as err:
            os.write(write_end, f"error: {err!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    got = b""
    while chunk := os.read(read_end, 4096):
        got += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return got


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_the_daemon_answers_no_other_user_even_when_its_socket_is_opened_to_all(tmp_path, runtime):
    root = new_project(tmp_path / "p", EDITED)
    assert doit(root, env=on(runtime), process=True).code == 0
    assert wait_for(lambda: statuses(runtime), within=30)
    (path,) = sockets(runtime)
    # Opened up by mistake: the folder is no longer private, the socket writable by all.
    runtime.chmod(0o755)
    path.parent.chmod(0o755)
    path.chmod(0o777)
    # Connected, and hung up on without a word.
    assert status_as_nobody(path) in (b"connected; hung up", b"connected; answer: ")
    assert statuses(runtime)  # its own user still gets an answer
