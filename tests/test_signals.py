"""SIGTERM and SIGHUP clean up like Ctrl-C; SIGKILL leaves nothing that blocks the next build.

Real processes, real signals, real containers: a run or build is started as
a user would, signalled while a block runs, and checked from outside.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES
from tests.dockerutil import (
    BUSYBOX_IMAGE,
    docker_session,
    processes_running,
    project_containers,
    require_image,
    secs,
)
from tests.support import (
    OWN_STORE,
    alive,
    children_of,
    domarkx,
    local_session,
    new_project,
    process_env,
    saved_state,
    spawn,
    wait_for,
)


def statuses(root: Path) -> list[str]:
    return [
        json.loads(p.read_text())["status"]
        for p in sorted((root / ".domarkx" / "instances").glob("*/instance.json"))
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_local_run_cleans_up_like_ctrl_c(tmp_path, signum):
    marker = secs(str(int(signum)))
    root = new_project(
        tmp_path / "p", {"sessions/a.md": local_session(f"sleep {marker}")}, dodo=False
    )
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    proc = spawn(root, "domarkx", "run", "a", env=OWN_STORE)
    try:
        assert wait_for(lambda: bool(processes_running(marker))), "the block never started"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert f"interrupted ({signal.Signals(signum).name})" in err
    assert processes_running(marker, within=5) == []
    assert statuses(root) == ["failed"]


@pytest.mark.docker
def test_sigterm_to_a_docker_run_removes_its_container(tmp_path):
    require_image(BUSYBOX_IMAGE)
    root = new_project(tmp_path / "p", {"sessions/a.md": docker_session("sleep 50")}, dodo=False)
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    proc = spawn(root, "domarkx", "run", "a", env=OWN_STORE)
    try:
        assert wait_for(lambda: bool(project_containers(root))), "no sandbox"
        time.sleep(0.5)  # the block is running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert project_containers(root) == []
    assert statuses(root) == ["failed"]


def build_stopped_by_sigterm(root: Path, marker: str) -> tuple[str, str]:
    """``domarkx build`` sent SIGTERM once the block marked ``marker`` runs; its output.

    It ends as a shell reports a process ended by SIGTERM (143).
    """
    proc = spawn(root, "domarkx", "build", env=OWN_STORE)
    try:
        assert wait_for(lambda: bool(processes_running(marker))), "the block never started"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    return out, err


def test_sigterm_to_a_build_stops_its_sandbox_and_the_next_build_goes_on(tmp_path):
    marker = secs("2")
    files = {f"sessions/s{i}.md": local_session(f"echo {i}") for i in range(3)}
    files["sessions/slow.md"] = local_session(f"sleep {marker}")
    root = new_project(tmp_path / "p", files, dodo=False)
    out, err = build_stopped_by_sigterm(root, marker)
    assert "Traceback" not in out + err
    assert "interrupted by SIGTERM" in out
    assert processes_running(marker, within=5) == []
    assert "running" not in statuses(root)
    # The sessions that finished are not redone. Builds run in threads: which ones
    # finished before the signal is read from their exports, not from the order.
    finished = [f"s{i}" for i in range(3) if (root / ".domarkx/exports" / f"s{i}.md").exists()]
    (root / "sessions" / "slow.md").write_text(local_session("echo fast"))
    again = domarkx(root, "build", process=True)
    assert again.code == 0, again.err
    assert "run:slow" in again.out
    for name in finished:
        assert f"run:{name}\n" not in again.out, (name, again.out)


def doit_bin() -> str:
    return str(Path(sys.executable).with_name("doit"))


def test_ctrl_c_of_doit_says_interrupted_without_a_traceback(tmp_path):
    marker = secs("3")
    root = new_project(
        tmp_path / "p",
        {
            "sessions/a.md": local_session("echo a"),
            "sessions/slow.md": local_session(f"sleep {marker}"),
        },
    )
    proc = subprocess.Popen(
        [doit_bin()],
        cwd=root,
        env=process_env(OWN_STORE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: bool(processes_running(marker))), "the block never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert "interrupted" in out
    assert " run, " not in out and "up to date (" not in out  # no success-looking summary
    assert processes_running(marker, within=5) == []


# Where a Ctrl-C pressed right after Enter lands: while the command's modules load,
# and while its arguments are read. A trace function sends a real SIGINT when the
# interpreter enters that code, then steps aside.
STARTING = """
import os, runpy, signal, sys

def trace(frame, event, arg):
    if event == "call" and (frame.f_globals.get("__name__"), frame.f_code.co_name) == WHERE:
        sys.settrace(None)
        os.kill(os.getpid(), signal.SIGINT)

WHERE = tuple(sys.argv[1:3])
sys.argv = ["domarkx", "snapshots"]
sys.settrace(trace)
runpy.run_module("domarkx", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "where",
    [("domarkx.cli.main", "<module>"), ("domarkx.cli.main", "build_parser")],
    ids=["loading", "parsing"],
)
def test_ctrl_c_while_the_command_starts_says_interrupted_without_a_traceback(tmp_path, where):
    root = new_project(tmp_path / "p", {}, dodo=False)
    done = subprocess.run(
        [sys.executable, "-c", STARTING, *where],
        cwd=root,
        env=process_env(OWN_STORE),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "domarkx: interrupted\n"


@pytest.mark.slow(5)
def test_sigkill_of_a_cold_build_never_leaves_the_lock_held(tmp_path):
    """The cold build's workers die with it, and never hold the build lock."""
    body = "## user\n\n" + "Some prose to parse. " * 200 + "\n"
    files = {f"sessions/s{i:03d}.md": body + f"\n{i}\n" for i in range(400)}
    root = new_project(tmp_path / "p", files, dodo=False)
    trials = 3
    parse_dir = root / ".domarkx" / BUILD_CACHES / "parse"

    def started() -> bool:
        return parse_dir.is_dir() and any(parse_dir.iterdir())

    for trial in range(trials):
        proc = spawn(root, "domarkx", "build", "snapshot", env=OWN_STORE)
        try:
            # Kill while the workers run: once the first parse cache is written.
            wait_for(started, within=30)
            time.sleep(0.05 * trial)
            workers = children_of(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        left = workers
        assert wait_for(lambda: not any(alive(w) for w in left), within=5), "workers live on"  # noqa: B023
        again = domarkx(root, "build", "parse", process=True)  # takes the lock at once
        assert again.code == 0, again.out + again.err
        assert "another build is running" not in again.err
        for cache in (root / ".domarkx" / BUILD_CACHES).glob("parse/*.json"):
            cache.unlink()  # the next trial is a cold build again


@pytest.mark.slow(2)
@pytest.mark.parametrize("docker", [False, pytest.param(True, marks=pytest.mark.docker)])
def test_after_sigkill_of_a_build_the_next_build_ends_what_it_left(tmp_path, docker):
    marker = secs("4")
    if docker:
        require_image(BUSYBOX_IMAGE)
        text = docker_session(f"sleep {marker}")
    else:
        text = local_session(f"sleep {marker}")
    root = new_project(
        tmp_path / "p", {"sessions/slow.md": text, "sessions/b.md": text}, dodo=False
    )
    proc = spawn(root, "domarkx", "build", env=OWN_STORE)
    try:
        assert wait_for(lambda: bool(processes_running(marker))), "the block never started"
        if docker:
            assert wait_for(lambda: bool(project_containers(root)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert processes_running(marker), "the block died with the build (nothing to test)"
    for name in ("slow", "b"):
        (root / "sessions" / f"{name}.md").write_text(local_session("echo quick"))
    again = domarkx(root, "build", process=True)
    assert again.code == 0, again.out + again.err
    assert "left 1 sandbox(es) or instance(s) behind; ended them" in again.err
    assert processes_running(marker, within=5) == []
    if docker:
        assert project_containers(root) == []
    assert "running" not in statuses(root)


def test_sigkill_of_a_parallel_build_leaves_no_worker_and_no_block(tmp_path):
    marker = secs("6")
    files = {f"sessions/s{i}.md": local_session(f"sleep {marker}; echo {i}") for i in range(4)}
    root = new_project(tmp_path / "p", files, dodo=False)
    proc = spawn(root, "domarkx", "build", "-n", "2", env=OWN_STORE)
    try:
        assert wait_for(lambda: len(processes_running(marker)) >= 2), "the blocks never started"
        workers = children_of(proc.pid)
        assert workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_for(lambda: not any(alive(w) for w in workers), within=5), "doit workers live on"
    for i in range(4):
        (root / "sessions" / f"s{i}.md").write_text(local_session("echo quick"))
    again = domarkx(root, "build", process=True)
    assert again.code == 0, again.out + again.err
    assert processes_running(marker, within=5) == []


def test_an_interrupted_build_counts_only_the_tasks_it_saved(tmp_path):
    marker = secs("4")
    root = new_project(tmp_path / "p", {"sessions/slow.md": local_session(f"sleep {marker}")})
    out, _err = build_stopped_by_sigterm(root, marker)
    [line] = [line for line in out.splitlines() if "interrupted by SIGTERM" in line]
    said = int(line.split(": ")[2].split(" task")[0])
    saved = [name for name in saved_state(root) if ":" in name and not name.startswith("_")]
    assert "run:slow" not in saved  # it was running: nothing of it saved
    assert said == len(saved), (line, saved)
