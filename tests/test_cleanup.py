"""Cleaning up is scoped to what this project owns (spec: tools-chat-trust.md section 4).

Two real projects on one Docker daemon, real processes and signals: `prune`
removes only its own project's leftovers, never another project's running
sandbox nor what a build in progress uses, and what a killed run left is
found and removed by the next `prune` or build.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from domarkx.data import lock
from tests.dockerutil import BUSYBOX_IMAGE, docker_session, project_containers, require_image
from tests.support import OWN_STORE, domarkx, local_session, new_project, spawn, wait_for


def instance_states(root: Path) -> list[str]:
    import json

    states = []
    for path in sorted((root / ".domarkx" / "instances").glob("*/instance.json")):
        states.append(json.loads(path.read_text())["status"])
    return states


@pytest.mark.slow(4)
@pytest.mark.docker
def test_prune_never_touches_another_projects_running_sandbox(tmp_path):
    require_image(BUSYBOX_IMAGE)
    a = new_project(tmp_path / "a", {"sessions/s.md": docker_session("sleep 45")}, dodo=False)
    b = new_project(tmp_path / "b", {"sessions/s.md": docker_session("sleep 45")}, dodo=False)
    for root in (a, b):
        assert domarkx(root, "import", "sessions/s.md", process=True).code == 0
    running_b = spawn(b, "domarkx", "run", "s", env=OWN_STORE)
    killed_a = spawn(a, "domarkx", "run", "s", env=OWN_STORE)
    try:
        assert wait_for(lambda: project_containers(b) and project_containers(a)), "no sandbox"
        # A run of project A dies without cleaning up: its sandbox is A's leftover.
        killed_a.send_signal(signal.SIGKILL)
        killed_a.wait(10)
        b_containers = project_containers(b)
        done = domarkx(a, "prune", process=True)
        assert done.code == 0, done.err
        assert project_containers(a) == []  # A's leftover is gone
        assert project_containers(b) == b_containers  # B's running sandbox is untouched
        assert running_b.poll() is None
        assert "failed" not in instance_states(b)
    finally:
        for proc in (running_b, killed_a):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        for root in (a, b):
            domarkx(root, "prune", process=True)
    assert project_containers(b) == []


def test_prune_waits_for_a_build_in_progress_and_keeps_its_snapshots(project, cli, cli_process):
    root = project({"sessions/my notes.md": local_session("echo hi")})
    first = cli("build")
    assert first.code == 0, first.err
    lock_file = str(root / ".domarkx" / "build.lock")
    lock.acquire(lock_file)  # a build in progress
    try:
        # Another process: the build lock is a POSIX record lock, held per process.
        refused = cli_process("prune")
    finally:
        lock.release(lock_file)
    assert refused.code == 1
    assert "another build is running in this project" in refused.err
    assert "Traceback" not in refused.err
    # After the build, prune keeps what the build uses, whatever the session's name.
    assert cli("prune").code == 0
    assert list((root / ".domarkx" / "snapshots").glob("*.json")), "prune removed the snapshot"
    (root / "sessions" / "my notes.md").write_text(local_session("echo hi"))
    again = cli("build", "-a")
    assert again.code == 0, again.err
    assert "no snapshot" not in again.err


def test_a_session_name_with_spaces_is_tagged(project, cli):
    root = project({"sessions/my notes.md": local_session("echo hi")})
    done = cli("import", "sessions/my notes.md")
    assert done.code == 0, done.err
    snapshot_id = done.out.strip()
    listed = cli("snapshots")
    assert "my notes" in listed.out
    assert cli("run", "my notes").code == 0
    assert (root / ".domarkx" / "snapshots" / f"{snapshot_id}.json").is_file()


@pytest.mark.parametrize("tag", [".", "..", ".hidden"])
def test_a_dot_tag_is_one_clear_error(project, cli, tag):
    root = project({"sessions/a.md": local_session("echo hi")})
    done = cli("import", "sessions/a.md", "--tag", tag)
    assert done.code == 1
    assert "invalid tag" in done.err and "Traceback" not in done.err
    assert not list((root / ".domarkx").rglob("*.json")), "something was written"


def test_after_sigkill_the_next_prune_ends_a_local_runs_processes(project, cli):
    from tests.dockerutil import processes_running, secs

    marker = secs("1")
    root = project({"sessions/a.md": local_session(f"sleep {marker}")})
    assert cli("import", "sessions/a.md").code == 0
    proc = spawn(root, "domarkx", "run", "a", env=OWN_STORE)
    try:
        assert wait_for(lambda: bool(processes_running(marker))), "the block never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert processes_running(marker), "the block died with its run (nothing to test)"
        done = cli("prune")
        assert done.code == 0, done.err
        assert processes_running(marker, within=5) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
