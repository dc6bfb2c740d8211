"""Odd inputs and rough handling: one clear error, never a hang or a traceback.

Real named pipes, symlink loops, a read-only mount, a closed pipe on stdout,
a missing Docker image and a model server that is down.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES
from tests.dockerutil import docker_session
from tests.support import (
    WatchProcess,
    doit,
    domarkx,
    local_session,
    new_project,
    process_env,
    save,
    session,
)


def odd_project(root: Path) -> Path:
    new_project(root, {"sessions/a.md": local_session("echo a")})
    os.mkfifo(root / "sessions" / "pipe.md")
    os.symlink("loop.md", root / "sessions" / "loop.md")
    os.symlink("..", root / "sessions" / "up")  # a folder loop
    return root


def test_a_named_pipe_session_is_an_error_not_a_hang(tmp_path):
    root = odd_project(tmp_path / "p")
    done = domarkx(root, "import", "sessions/pipe.md", timeout=20, process=True)
    assert done.code == 1
    assert done.err.startswith("domarkx: error: sessions/pipe.md: ")
    assert "named pipe" in done.err and "Traceback" not in done.err
    assert not (root / ".domarkx" / "snapshots").exists()


def test_doit_reports_pipes_and_symlink_loops_and_builds_the_rest(tmp_path):
    root = odd_project(tmp_path / "p")
    listed = doit(root, "list", "--all", timeout=30)
    assert listed.code == 0 and "Traceback" not in listed.out + listed.err
    built = doit(root, "--continue", timeout=60)
    assert built.code == 1, built.out + built.err
    assert "Traceback" not in built.out + built.err
    assert "FAILED parse:pipe: sessions/pipe.md: cannot read: a named pipe" in built.out
    assert "FAILED parse:loop: sessions/loop.md: cannot read: Too many levels" in built.out
    assert (root / ".domarkx" / "exports" / "a.md").is_file()


def test_doit_continue_and_build_c_exit_alike(tmp_path):
    root = odd_project(tmp_path / "p")
    assert doit(root, "--continue", timeout=60).code == 1
    assert domarkx(root, "build", "-c", timeout=60, process=True).code == 1


def test_a_named_pipe_include_is_an_error_not_a_hang(tmp_path):
    root = new_project(
        tmp_path / "p",
        {"sessions/a.md": "## user\n\n[@x](domarkx://include?path=_part.md)\n"},
        dodo=False,
    )
    os.mkfifo(root / "sessions" / "_part.md")
    done = domarkx(root, "import", "sessions/a.md", timeout=20, process=True)
    assert done.code == 1
    assert "sessions/a.md:3:" in done.err and "named pipe" in done.err


def test_watch_reports_a_symlink_loop_and_goes_on(tmp_path):
    root = odd_project(tmp_path / "p")
    (root / "dodo.py").unlink()
    watch = WatchProcess(root)
    try:
        watch.expect("built 3 sessions up to snapshot")
        watch.expect("watching sessions")
        save(root / "sessions" / "a.md", local_session("echo again"))
        watch.expect("sessions/a.md changed: rebuilt a")
    finally:
        assert watch.stop() == 0
    assert not [line for line in watch.seen if "Traceback" in line]
    assert any("loop.md: cannot read: Too many levels" in line for line in watch.seen)


def test_watch_does_not_rebuild_a_deleted_session_when_its_partial_changes(tmp_path):
    root = new_project(
        tmp_path / "p",
        {
            "sessions/a.md": "## user\n\n[@x](domarkx://include?path=_part.md)\n",
            "sessions/_part.md": "part\n",
            "sessions/b.md": session("b"),
        },
    )
    assert doit(root, "snapshot").code == 0
    (root / "sessions" / "a.md").unlink()
    watch = WatchProcess(root)
    try:
        watch.expect("watching sessions")
        save(root / "sessions" / "_part.md", "part, edited\n")
        time.sleep(1.0)
        save(root / "sessions" / "b.md", session("b, edited"))
        watch.expect("sessions/b.md changed")
    finally:
        watch.stop()
    assert not [line for line in watch.seen if "failed: a" in line or "rebuilt a" in line]


def can_mount() -> bool:
    return (
        os.geteuid() == 0
        and subprocess.run(["which", "mount"], capture_output=True).returncode == 0
    )


def test_a_read_only_store_is_one_clear_error(tmp_path):
    root = new_project(tmp_path / "p", {"sessions/a.md": local_session("echo a")}, dodo=False)
    store = root / ".domarkx"
    store.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(store)]).returncode:
            pytest.fail("as root, a read-only tmpfs must mount")
    else:
        store.chmod(0o555)
    try:
        for args in (["import", "sessions/a.md"], ["build"]):
            done = domarkx(root, *args, process=True)
            assert done.code == 1, (args, done.out, done.err)
            assert "Traceback" not in done.out + done.err
            assert "Read-only file system" in done.err + done.out or (
                "Permission denied" in done.err + done.out
            )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(store)])
        else:
            store.chmod(0o755)


def test_doit_into_a_closed_pipe_has_no_traceback(tmp_path):
    root = new_project(tmp_path / "p", {f"sessions/s{i}.md": session(f"Q{i}") for i in range(40)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", "snapshot"],
        cwd=root,
        env=process_env({"DOMARKX_HOME": str(root / ".domarkx")}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `doit | head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err
    assert len(list((root / ".domarkx" / BUILD_CACHES / "snapshot").glob("*.id"))) == 40


def test_a_failed_block_is_named_by_file_and_line(tmp_path):
    text = "## user\n\nhi\n\n## assistant\n\nok\n\n```sh\necho one\n```\n\n```sh\nexit 3\n```\n"
    root = new_project(tmp_path / "p", {"sessions/a.md": text}, dodo=False)
    built = domarkx(root, "build", process=True)
    assert built.code == 1
    assert "FAILED run:a: sessions/a.md:13: the run failed" in built.out
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    ran = domarkx(root, "run", "--strict", "a", process=True)
    assert ran.code == 1
    assert "domarkx: error: sessions/a.md:13: " in ran.err


@pytest.mark.docker
def test_a_missing_docker_image_leaves_no_instance_created(tmp_path):
    from tests.dockerutil import require_docker

    require_docker()
    text = docker_session("echo hi").replace("domarkx-test:busybox", "domarkx-test:no-such-image")
    root = new_project(tmp_path / "p", {"sessions/a.md": text}, dodo=False)
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    ran = domarkx(root, "run", "a", process=True)
    assert ran.code == 1
    line = text.splitlines().index("image: domarkx-test:no-such-image") + 1
    assert f"sessions/a.md:{line}: image domarkx-test:no-such-image not found" in ran.err
    assert "bench/docker-image.sh" not in ran.err  # a user's project has no bench/
    states = [
        json.loads(p.read_text())["status"]
        for p in (root / ".domarkx" / "instances").glob("*/instance.json")
    ]
    assert states == ["failed"]


def test_a_build_names_the_line_of_an_unknown_engine(tmp_path):
    text = "---\ntitle: t\n---\n\n```yaml session-config\nengine: dokker\n```\n\n" + local_session(
        "echo hi"
    )
    root = new_project(tmp_path / "p", {"sessions/e.md": text, "sessions/ok.md": session("Q")})
    built = doit(root, "--continue")
    assert built.code != 0
    assert "FAILED run:e: sessions/e.md:6: unknown engine 'dokker'; known: docker" in built.out
    assert "Traceback" not in built.out + built.err
    assert (root / ".domarkx" / "exports" / "ok.md").exists()


@pytest.mark.slow(3)
def test_a_model_server_that_is_down_says_it_retries(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    text = (
        "```yaml session-config\nmodel:\n  provider: openai\n  name: m\n"
        f"  base_url: http://127.0.0.1:{port}/v1\n  api_key_env: DOMARKX_TEST_KEY\n```\n\n"
        "## user\n\nhi\n"
    )
    grant = (
        f'[endpoints.local]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        'api_key_env = "DOMARKX_TEST_KEY"\n'
    )
    root = new_project(tmp_path / "p", {"sessions/a.md": text, "domarkx.toml": grant}, dodo=False)
    assert domarkx(root, "import", "sessions/a.md", process=True).code == 0
    env = {"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM_RETRIES": "2"}
    ran = domarkx(root, "run", "a", env=env, process=True, timeout=60)
    where = f"http://127.0.0.1:{port}/v1"
    # The client's backoff: 0.5 s then 1 s (less up to 25 % jitter), then one error.
    assert f"the model server at {where}: cannot connect (ConnectError); retrying in 0." in (
        ran.err
    ), ran.err
    assert "(try 2 of 3)" in ran.err and "(try 3 of 3)" in ran.err
    assert ran.err.count(f"cannot reach the model server at {where}") == 1, ran.err
    assert "tried 3 times" in ran.err
    assert ran.code == 1 and "Traceback" not in ran.err
