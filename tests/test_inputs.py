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
from test_cleanup import docker_session, domarkx, env_for, local_session, make_project
from test_pipeline import doit, new_project, session
from test_watch import WatchProcess, save

DODO = "from domarkx.pipeline.tasks import *  # noqa: F403\n"


def odd_project(root: Path) -> Path:
    make_project(root, {"dodo.py": DODO, "sessions/a.md": local_session("echo a")})
    os.mkfifo(root / "sessions" / "pipe.md")
    os.symlink("loop.md", root / "sessions" / "loop.md")
    os.symlink("..", root / "sessions" / "up")  # a folder loop
    return root


def test_a_named_pipe_session_is_an_error_not_a_hang(tmp_path):
    root = odd_project(tmp_path / "p")
    done = domarkx(root, "import", "sessions/pipe.md", timeout=20)
    assert done.returncode == 1
    assert done.stderr.startswith("domarkx: error: sessions/pipe.md: ")
    assert "named pipe" in done.stderr and "Traceback" not in done.stderr
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
    assert domarkx(root, "build", "-c", timeout=60).returncode == 1


def test_a_named_pipe_include_is_an_error_not_a_hang(tmp_path):
    root = make_project(
        tmp_path / "p",
        {"sessions/a.md": "## user\n\n[@x](domarkx://include?path=_part.md)\n"},
    )
    os.mkfifo(root / "sessions" / "_part.md")
    done = domarkx(root, "import", "sessions/a.md", timeout=20)
    assert done.returncode == 1
    assert "sessions/a.md:3:" in done.stderr and "named pipe" in done.stderr


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
    root = make_project(tmp_path / "p", {"sessions/a.md": local_session("echo a")})
    store = root / ".domarkx"
    store.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(store)]).returncode:
            pytest.fail("as root, a read-only tmpfs must mount")
    else:
        store.chmod(0o555)
    try:
        for args in (["import", "sessions/a.md"], ["build"]):
            done = domarkx(root, *args)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert "Traceback" not in done.stdout + done.stderr
            assert "Read-only file system" in done.stderr + done.stdout or (
                "Permission denied" in done.stderr + done.stdout
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
        env=env_for(root) | {"DOMARKX_HOME": str(root / ".domarkx")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `doit | head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err
    assert len(list((root / ".domarkx" / "cache" / "snapshot").glob("*.id"))) == 40


def test_a_failed_block_is_named_by_file_and_line(tmp_path):
    text = "## user\n\nhi\n\n## assistant\n\nok\n\n```sh\necho one\n```\n\n```sh\nexit 3\n```\n"
    root = make_project(tmp_path / "p", {"sessions/a.md": text})
    built = domarkx(root, "build")
    assert built.returncode == 1
    assert "FAILED run:a: sessions/a.md:13: the run failed" in built.stdout
    assert domarkx(root, "import", "sessions/a.md").returncode == 0
    ran = domarkx(root, "run", "--strict", "a")
    assert ran.returncode == 1
    assert "domarkx: error: sessions/a.md:13: " in ran.stderr


@pytest.mark.docker
def test_a_missing_docker_image_leaves_no_instance_created(tmp_path):
    from dockerutil import require_docker

    require_docker()
    text = docker_session("echo hi").replace("domarkx-test:busybox", "domarkx-test:no-such-image")
    root = make_project(tmp_path / "p", {"sessions/a.md": text})
    assert domarkx(root, "import", "sessions/a.md").returncode == 0
    ran = domarkx(root, "run", "a")
    assert ran.returncode == 1
    line = text.splitlines().index("image: domarkx-test:no-such-image") + 1
    assert f"sessions/a.md:{line}: image domarkx-test:no-such-image not found" in ran.stderr
    assert "bench/docker-image.sh" not in ran.stderr  # a user's project has no bench/
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
    root = make_project(tmp_path / "p", {"sessions/a.md": text, "domarkx.toml": grant})
    assert domarkx(root, "import", "sessions/a.md").returncode == 0
    env = env_for(root) | {
        "DOMARKX_TEST_KEY": "sk-test",
        "DOMARKX_LLM_RETRIES": "2",
    }
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "domarkx", "run", "a"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    where = f"http://127.0.0.1:{port}/v1"
    # The client's backoff: 0.5 s then 1 s (less up to 25 % jitter), then one error.
    assert f"the model server at {where}: cannot connect (ConnectError); retrying in 0." in (
        ran.stderr
    ), ran.stderr
    assert "(try 2 of 3)" in ran.stderr and "(try 3 of 3)" in ran.stderr
    assert ran.stderr.count(f"cannot reach the model server at {where}") == 1, ran.stderr
    assert "tried 3 times" in ran.stderr
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert took < 10
