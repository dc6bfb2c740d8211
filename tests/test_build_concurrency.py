"""How a build shares its time: model calls overlap, cold builds use worker processes.

Real ``doit`` / ``domarkx build`` runs against the loopback chat-completions
server (tests/chat_server.py) through the real ``openai`` client. What is
checked is what the server and the process table see, not how long it took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES
from tests.chat_server import ChatServer, Response
from tests.support import (
    EDITED,
    OWN_STORE,
    children_of,
    doit,
    domarkx,
    new_project,
    process_env,
    session,
    spawn,
)

SESSIONS = 4
DELAY = 1.5  # seconds the server takes per answer

ASKS = """\
```yaml session-config
model:
  provider: openai
  name: test-model
  base_url: {base_url}
```

## user

Question {n}?
"""


class RecordingServer(ChatServer):
    """Notes when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def next_response(self) -> Response:
        with self._lock:
            self.arrivals.append(time.monotonic())
        return super().next_response()


def most_at_once(arrivals: list[float]) -> int:
    """How many requests arrived while the first one was still waiting for its answer."""
    first = min(arrivals)
    return sum(1 for t in arrivals if t < first + DELAY * 0.9)


def model_project(root: Path, base_url: str) -> Path:
    files = {f"sessions/q{n}.md": ASKS.format(base_url=base_url, n=n) for n in range(SESSIONS)}
    return new_project(root, files)


@pytest.mark.slow(3)
@pytest.mark.parametrize("command", ["doit", "domarkx build"])
def test_sessions_asking_a_model_wait_for_it_together(tmp_path, command):
    with RecordingServer() as server:
        server.default = Response(text="An answer.", delay=DELAY)
        root = model_project(tmp_path / "p", server.base_url)
        run = doit if command == "doit" else domarkx
        result = run(root) if command == "doit" else run(root, "build")
        assert result.code == 0, result.out + result.err
        assert len(server.arrivals) == SESSIONS
        assert most_at_once(server.arrivals) == SESSIONS
    for n in range(SESSIONS):
        export = (root / ".domarkx" / "exports" / f"q{n}.md").read_text()
        assert "An answer." in export


@pytest.mark.slow(3)
def test_the_concurrency_knob_limits_requests_in_flight(tmp_path):
    with RecordingServer() as server:
        server.default = Response(text="An answer.", delay=DELAY)
        root = model_project(tmp_path / "p", server.base_url)
        result = doit(root, env={"DOMARKX_LLM_CONCURRENCY": "2"})
        assert result.code == 0, result.out + result.err
        assert most_at_once(server.arrivals) == 2


def test_a_bad_concurrency_value_is_one_clear_error(tmp_path):
    root = new_project(tmp_path / "p", {"sessions/a.md": session("A")})
    result = domarkx(root, "build", env={"DOMARKX_LLM_CONCURRENCY": "many"})
    assert result.code == 1
    assert "DOMARKX_LLM_CONCURRENCY='many' is not a whole number >= 1" in result.err
    assert "Traceback" not in result.err


def most_children_during(root: Path, args: list[str], env: dict[str, str]) -> int:
    """Run doit in the background; the most child processes it had at one time."""
    code, most = build_in_process_of_its_own(root, args, env)
    assert code == 0
    return most


@pytest.mark.slow(3)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes need 2 cores")
def test_cold_build_workers_start_unless_switched_off_and_none_outlive_the_build(tmp_path):
    files = {f"sessions/s{n:03}.md": session(f"Question {n}") for n in range(150)}
    seen = {}
    trees = []
    for switch in ("1", "0"):
        root = new_project(tmp_path / f"p{switch}", files)
        seen[switch] = most_children_during(root, ["snapshot"], {"DOMARKX_PREBUILD": switch})
        trees.append(sorted(p.name for p in (root / ".domarkx" / "snapshots").iterdir()))
    assert seen["1"] >= 2
    assert seen["0"] == 0
    assert trees[0] == trees[1] and len(trees[0]) == 150


def test_overlap_lock_is_released_only_while_waiting():
    from domarkx import overlap

    order: list[str] = []

    def task(name: str) -> None:
        with overlap.exclusive():
            order.append(f"{name} works")
            with overlap.waiting():
                time.sleep(0.2)
            order.append(f"{name} again")

    threads = [threading.Thread(target=task, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # Both started working before either came back from its wait.
    assert order[:2] in (["a works", "b works"], ["b works", "a works"])
    with overlap.waiting():  # outside a build it changes nothing
        pass


def test_an_in_process_build_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    # The garbage collector (off while tasks load) and sys.stdout (which doit's
    # output capture would swap from many threads at once) are as before.
    import gc
    import sys

    from domarkx.cli.main import main

    files = {f"sessions/s{n:02}.md": session(f"Q{n}", "print(1)") for n in range(30)}
    root = new_project(tmp_path / "p", files)
    monkeypatch.chdir(root)
    monkeypatch.delenv("DOMARKX_HOME", raising=False)
    stdout, stderr = sys.stdout, sys.stderr
    for argv in (["build"], ["build", "no-such-task"]):
        main(argv)
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0
        assert sys.stdout is stdout and sys.stderr is stderr
    assert len(list((root / ".domarkx" / "exports").glob("*.md"))) == 30


def test_an_interrupted_build_ends_its_runs_as_a_serial_build_would(tmp_path):
    # Ctrl-C reaches doit's main thread; the session running in a worker thread
    # still has its sandbox destroyed and its instance marked failed.
    import signal
    import subprocess

    from domarkx.data.store import Store

    root = tmp_path / "p"
    marker = tmp_path / "started"
    new_project(
        root,
        {
            "sessions/a.md": f"## assistant\n\n```bash\necho $$ > {marker}; sleep 60\n```\n",
            "sessions/b.md": session("B", "print('b')"),
        },
    )
    process = spawn(
        root, "doit", env=OWN_STORE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the block never started"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    assert process.returncode != 0

    shell = int(marker.read_text())
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{shell}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{shell}"), "the block's shell outlived the build"
    store = Store(root / ".domarkx", root)
    statuses = [store.get_instance(i).status for i in store.instance_ids()]
    assert statuses and set(statuses) <= {"failed", "exited"}
    assert "failed" in statuses


TWIN = """\
```yaml session-config
model:
  provider: openai
  name: test-model
  base_url: {base_url}
```

## user

Start a helper.

## assistant

```sh
sleep {nap} &
echo started
```

## user

And now?
"""


@pytest.mark.slow(3)
def test_two_sessions_with_the_same_content_get_an_instance_each(tmp_path):
    """Twins share a snapshot and a run key, yet each session's run has its own instance."""
    from tests.dockerutil import RUN_ID, processes_running

    nap = f"31.{RUN_ID}"
    with RecordingServer() as server:
        server.default = Response(text="Done.", delay=DELAY)
        text = TWIN.format(base_url=server.base_url, nap=nap)
        root = new_project(tmp_path / "p", {"sessions/a.md": text, "sessions/b.md": text})
        result = doit(root, process=True)  # a process of its own: it ends, as a user's does
        assert result.code == 0, result.out + result.err
        assert most_at_once(server.arrivals) == 2  # both ran, side by side
    runs = {
        name: json.loads((root / ".domarkx" / BUILD_CACHES / "run" / f"{name}.json").read_text())
        for name in ("a", "b")
    }
    assert runs["a"]["snapshot_id"] == runs["b"]["snapshot_id"]
    assert runs["a"]["instance_id"] != runs["b"]["instance_id"]
    for record in runs.values():
        instance = root / ".domarkx" / "instances" / record["instance_id"] / "instance.json"
        data = json.loads(instance.read_text())
        assert data["status"] == "exited" and not data["sandbox"].get("alive")
    assert processes_running(nap, within=5) == []
    assert list((root / ".domarkx" / "owners").glob("*")) == []


def build_in_process_of_its_own(
    root: Path, args: list[str], env: dict[str, str]
) -> tuple[int, int]:
    """``doit ARGS`` as a fresh process: its exit status, and the most children it had at once."""
    import subprocess

    process = spawn(
        root,
        "doit",
        *args,
        env={**OWN_STORE, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    most = 0
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        most = max(most, len(children_of(process.pid)))
        time.sleep(0.002)
    return process.wait(timeout=10), most


# What differs between two builds of the same sessions anyway: the execution
# cache's records (their durations) and the seconds each run took.
VARIES = ("cache/run/_keys/", "cache/seconds/")


def store_tree(root: Path) -> dict[str, bytes]:
    """What a build made: snapshots, tags, exports, the stages' caches, the instances' ids.

    Left out: what differs from one run to the next anyway (timestamps, pids and
    durations in the instances and in the execution cache's records, the seconds
    each run took).
    """
    store = root / ".domarkx"
    tree = {
        path.relative_to(store).as_posix(): path.read_bytes().replace(str(root).encode(), b"ROOT")
        for sub in ("snapshots", "tags", "cache", "exports")
        for path in sorted((store / sub).rglob("*"))
        if path.is_file() and not path.relative_to(store).as_posix().startswith(VARIES)
    }
    instances = store / "instances"
    tree["instances"] = " ".join(sorted(p.name for p in instances.iterdir())).encode()
    return tree


@pytest.mark.slow(4)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes need 2 cores")
def test_an_edit_built_by_a_worker_is_the_build_without_workers(tmp_path):
    # A fresh `doit` has none of the stages' modules loaded: a worker process
    # imports them while doit loads its tasks, and builds the edited sessions.
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    trees, seen = {}, {}
    for switch in ("1", "0"):
        root = new_project(tmp_path / f"p{switch}", EDITED)
        run_env = {**env, "DOMARKX_PREBUILD": switch}
        assert build_in_process_of_its_own(root, [], run_env)[0] == 0
        for name in ("plain", "code", "includes", "deep/other"):
            with open(root / "sessions" / f"{name}.md", "a") as handle:
                handle.write("\nOne more line.\n")
        code, seen[switch] = build_in_process_of_its_own(root, [], run_env)
        assert code == 0
        trees[switch] = store_tree(root)
        exports = root / ".domarkx" / "exports"
        assert "One more line." in (exports / "deep" / "other.md").read_text()
        assert "42" in (exports / "code.md").read_text()
        again = doit(root, env=run_env)
        assert again.code == 0 and again.executed == set(), again.out
    assert seen["1"] >= 1
    assert seen["0"] == 0
    assert trees["1"] == trees["0"]


def test_an_edit_built_to_snapshots_runs_nothing(tmp_path):
    root = new_project(tmp_path / "p", EDITED)
    assert build_in_process_of_its_own(root, [], {})[0] == 0
    exports = store_tree(root)
    for name in ("plain", "code"):
        with open(root / "sessions" / f"{name}.md", "a") as handle:
            handle.write("\nOne more line.\n")
    assert build_in_process_of_its_own(root, ["snapshot"], {})[0] == 0
    after = store_tree(root)
    assert after["instances"] == exports["instances"]
    assert {k: v for k, v in after.items() if k.startswith("exports/")} == {
        k: v for k, v in exports.items() if k.startswith("exports/")
    }
    assert b"One more line." in after[f"{BUILD_CACHES}/parse/plain.json"]


def test_listing_the_tasks_of_a_project_never_built_writes_nothing(tmp_path):
    # Workers may start while doit loads the tasks, but only a run lets them write.
    root = new_project(tmp_path / "p", EDITED)
    code, _ = build_in_process_of_its_own(root, ["list", "--all"], {})
    assert code == 0
    assert not (root / ".domarkx" / BUILD_CACHES / "parse").exists()
    assert not (root / ".domarkx" / "snapshots").exists()


IMPORTS_DODO = """\
import sys
import dodo
dodo.DOIT_CONFIG  # what doit reads first: the settings of the build
print("settings", flush=True)
sys.stdin.readline()
tasks = list(dodo.task_sessions())  # what doit does next: generate the tasks
print(len(tasks), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes need 2 cores")
def test_importing_the_dodo_and_reading_its_settings_start_no_process(tmp_path):
    files = {f"sessions/s{n:03}.md": session(f"Question {n}") for n in range(150)}
    root = new_project(tmp_path / "p", files)
    process = subprocess.Popen(
        [sys.executable, "-c", IMPORTS_DODO],
        cwd=root,
        env=process_env({**OWN_STORE, "DOMARKX_PREBUILD": "1"}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline() == "settings\n"
        assert children_of(process.pid) == set()
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline() == f"{5 * 150 + 5}\n"
        # Generating the tasks of a cold build is what starts its workers.
        assert len(children_of(process.pid)) >= 2
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()
    assert not list((root / ".domarkx" / BUILD_CACHES).glob("parse/**/*.json"))


INCLUDERS = {
    "sessions/_common.md": "Common words.\n",
    **{
        f"sessions/inc{n}.md": session(f"Q{n}", extra="[@c](domarkx://include?path=_common.md)")
        for n in range(3)
    },
    # Its expansion looks up a parameter: a worker leaves it to its task.
    "sessions/asks.md": session(
        "Hello [@user](domarkx://user)", extra="[@c](domarkx://include?path=_common.md)"
    ),
    "sessions/plain.md": session("A plain question"),
}


@pytest.mark.slow(4)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes need 2 cores")
def test_an_include_edit_built_by_a_worker_is_the_build_without_workers(tmp_path):
    # The sessions that include an edited file are parsed already: a worker
    # expands them again (from their parse cache) and takes them on from there.
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    trees, seen = {}, {}
    for switch in ("1", "0"):
        root = new_project(tmp_path / f"p{switch}", INCLUDERS)
        run_env = {**env, "DOMARKX_PREBUILD": switch}
        assert doit(root, "user=ana", env=run_env, process=True).code == 0
        with open(root / "sessions" / "_common.md", "a") as handle:
            handle.write("A new rule.\n")
        process = spawn(
            root,
            "doit",
            "user=bob",
            env={**OWN_STORE, **run_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        most = 0
        while process.poll() is None:
            most = max(most, len(children_of(process.pid)))
            time.sleep(0.002)
        assert process.wait() == 0
        seen[switch] = most
        exports = root / ".domarkx" / "exports"
        for n in range(3):
            assert "A new rule." in (exports / f"inc{n}.md").read_text()
        asks = (exports / "asks.md").read_text()
        assert "A new rule." in asks and "Hello bob" in asks
        again = doit(root, "user=bob", env=run_env)
        assert again.code == 0 and again.executed == set(), again.out
        trees[switch] = store_tree(root)
    assert seen["1"] >= 1
    assert seen["0"] == 0
    assert trees["1"] == trees["0"]
