"""Fault injection: builds and runs killed at random points, and what the next one finds.

A project of a few hundred sessions is built, and each build is ended by
SIGKILL, SIGTERM or SIGINT after a random number of tasks (the first one a
cold build, with its worker processes). After each kill:

- the store is consistent: no temporary file, every JSON file whole, no
  instance left ``running``, every snapshot file holding its own id;
- the next build succeeds and redoes none of the tasks the killed one had
  finished (its state journal survives SIGKILL), and the one after it has
  nothing to do;
- no process (a block's ``sleep``) or container of the killed build
  survives that next build.

Then some sessions are edited, so that the next kill lands on real work.
The same for ``domarkx run`` (local and Docker), cleaned up by ``prune``.

The default keeps CI to about a minute; ``DOMARKX_SOAK=N`` multiplies the
kills (and the sessions by up to 4), for a longer soak.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.dockerutil import (
    BUSYBOX_IMAGE,
    RUN_ID,
    processes_running,
    project_containers,
    require_image,
)
from tests.support import OWN_STORE, domarkx, new_project, saved_state, spawn, wait_for

SOAK = max(1, int(os.environ.get("DOMARKX_SOAK", "1") or 1))
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
# The sleep in every block: unique to this test run, so a /proc scan finds its leftovers.
NAP = f"0.02{RUN_ID}"

pytestmark = pytest.mark.faults

# The last kill (signal, pid of the build), for the failure messages.
LAST_KILL: dict[str, object] = {}


def session(i: int, version: int, docker: bool = False) -> str:
    config = ""
    if docker:
        config = (
            f"```yaml session-config\nengine: docker\nimage: {BUSYBOX_IMAGE}\ntimeout: 30\n```\n\n"
        )
    return f"{config}## user\n\nQuestion {i}\n\n## assistant\n\n```sh\nsleep {NAP}; echo {i}.{version}\n```\n"


def build(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """A whole build; the tasks it ran (a set: in threads, the lines come in any order)."""
    done = domarkx(
        root,
        "build",
        *args,
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
        process=True,
        timeout=600,
    )
    return done.code, set(_started(done.out)), done.out + done.err


def _started(out: str) -> list[str]:
    return [line[3:] for line in out.splitlines() if line.startswith(".  ")]


def kill_a_build(
    root: Path, signum: int, after_tasks: int, env: dict[str, str] | None = None
) -> set[str]:
    """Start a build, signal it once ``after_tasks`` tasks started; the tasks it finished.

    What finished is read from doit's state (a task's state is saved when it
    ends), not from the order of the ``.  task`` lines: doit's thread runner
    prints a task when it hands it to a thread, several before the first ends.
    """
    before = saved_state(root)
    proc = spawn(
        root,
        "domarkx",
        "build",
        env={**OWN_STORE, "PYTHONUNBUFFERED": "1", **(env or {})},
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if len(_started("".join(lines))) >= after_tasks:
                proc.send_signal(signum)
                break
        rest, _ = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines)
    assert "Traceback" not in out, out[-3000:]
    LAST_KILL.update(signal=signal.Signals(signum).name, pid=proc.pid)
    after = saved_state(root)
    return {task for task, state in after.items() if state != before.get(task)}


def check_store(root: Path) -> None:
    store = root / ".domarkx"
    temporary = [p for p in store.rglob("*.tmp")]
    assert temporary == [], (temporary, LAST_KILL)
    for path in store.rglob("*.json"):
        json.loads(path.read_text())  # whole, not cut
    for path in (store / "snapshots").glob("*.json"):
        assert json.loads(path.read_text())["snapshot_id"] == path.stem
    for path in (store / "instances").glob("*/instance.json"):
        status = json.loads(path.read_text())["status"]
        assert status in ("exited", "failed", "stopped"), (path, status)


def run_cycles(
    root: Path,
    count: int,
    kills: int,
    docker: bool,
    rng: random.Random,
    env: dict[str, str] | None = None,
) -> None:
    total_tasks = 5 * count
    for cycle in range(kills):
        signum = SIGNALS[cycle % len(SIGNALS)]
        after = rng.randint(1, max(2, total_tasks // 2))
        finished = kill_a_build(root, signum, after, env)
        code, redone, out = build(root, env=env)
        assert code == 0, out[-3000:]
        assert not (redone & finished), sorted(redone & finished)[:10]
        check_store(root)
        assert processes_running(NAP, within=5) == []
        if docker:
            assert project_containers(root) == []
        code, again, out = build(root, env=env)
        assert code == 0 and again == set(), out[-2000:]
        # New work for the next kill: edit some sessions (a code change re-runs them).
        edited = rng.sample(range(count), k=max(2, count // 5))
        for i in edited:
            (root / "sessions" / f"s{i:03d}.md").write_text(session(i, cycle + 1, docker))
        total_tasks = 5 * len(edited)


# doit's thread runner (the default) and its serial one (DOMARKX_LLM_CONCURRENCY=1).
RUNNERS = [
    pytest.param({}, id="threads"),
    pytest.param({"DOMARKX_LLM_CONCURRENCY": "1"}, id="serial"),
]


@pytest.mark.slow(20)
@pytest.mark.parametrize("runner", RUNNERS)
def test_local_builds_killed_at_random_points(tmp_path, runner):
    count = 200 * min(SOAK, 4)
    rng = random.Random(int(RUN_ID) + len(runner))
    files = {f"sessions/s{i:03d}.md": session(i, 0) for i in range(count)}
    root = new_project(tmp_path / "p", files, dodo=False)
    run_cycles(root, count, kills=3 * SOAK, docker=False, rng=rng, env=runner)


@pytest.mark.slow(10)
@pytest.mark.docker
def test_docker_builds_killed_at_random_points(tmp_path):
    require_image(BUSYBOX_IMAGE)
    count = 12 * SOAK
    rng = random.Random(int(RUN_ID) + 1)
    files = {f"sessions/s{i:03d}.md": session(i, 0, docker=True) for i in range(count)}
    root = new_project(tmp_path / "p", files, dodo=False)
    run_cycles(root, count, kills=3 * SOAK, docker=True, rng=rng)


@pytest.mark.slow(4)
@pytest.mark.parametrize("docker", [False, pytest.param(True, marks=pytest.mark.docker)])
def test_runs_killed_at_random_points_are_cleaned_by_prune(tmp_path, docker):
    if docker:
        require_image(BUSYBOX_IMAGE)
    rng = random.Random(int(RUN_ID) + 2)
    marker = f"3{RUN_ID}"
    text = session(0, 0, docker).replace(f"sleep {NAP}", f"sleep {marker}")
    root = new_project(tmp_path / "p", {"sessions/a.md": text}, dodo=False)
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    for n in range(3 * SOAK):
        signum = SIGNALS[n % len(SIGNALS)]
        proc = spawn(root, "domarkx", "run", "a", env=OWN_STORE)
        time.sleep(rng.uniform(0.0, 1.5))  # before, during or after the sandbox starts
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        done = domarkx(root, "prune", process=True)
        assert done.code == 0, done.err
        assert processes_running(marker, within=5) == []
        if docker:
            assert wait_for(lambda: project_containers(root) == [], within=5)
        assert not list((root / ".domarkx" / "instances").glob("*/instance.json"))
