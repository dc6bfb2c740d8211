"""Sandboxes on another Docker engine: ``[docker] host``, ``DOCKER_HOST`` and the Docker context.

The "remote" engine is this machine's dockerd reached through a TCP port on
127.0.0.1 (a byte-for-byte forwarder to its socket), so the build talks to it
only over ``tcp://`` as it would to another machine.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dockerutil import BUSYBOX_IMAGE, docker_session, require_docker, require_image
from tests.s3server import free_port
from tests.support import domarkx, new_project

SOCKET = "/var/run/docker.sock"


class Forwarder:
    """127.0.0.1:port -> the local Docker socket, each connection in a thread of its own."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.target = os.environ.get("DOCKER_HOST", "").removeprefix("unix://") or SOCKET
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX)
        engine.connect(self.target)
        peers = {client: engine, engine: client}
        selector = selectors.DefaultSelector()
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        open_ends = 2
        with contextlib.ExitStack() as stack:
            for sock in peers:
                stack.callback(sock.close)
            while open_ends:
                for key, _ in selector.select():
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    data = ready.recv(65536)
                    if data:
                        peers[ready].sendall(data)
                        continue
                    selector.unregister(ready)
                    open_ends -= 1
                    with contextlib.suppress(OSError):
                        peers[ready].shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def tcp_engine() -> Iterator[Forwarder]:
    require_docker()
    require_image(BUSYBOX_IMAGE)
    forwarder = Forwarder()
    try:
        yield forwarder
    finally:
        forwarder.close()


def trusted(extra: dict[str, str | None] | None = None) -> dict[str, str | None]:
    return {"DOMARKX_TRUST": "1", "DOCKER_HOST": None, "DOCKER_CONTEXT": None, **(extra or {})}


def test_an_unreachable_host_in_the_config_is_one_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    root = new_project(
        tmp_path / "p",
        {
            "domarkx.toml": f'[docker]\nhost = "tcp://127.0.0.1:{port}"\n',
            "sessions/a.md": docker_session("echo hi"),
        },
    )
    code, out, err = domarkx(root, "build", env=trusted())
    err += out  # the build's report of the failed task
    assert code == 1
    assert f"cannot reach the Docker engine at tcp://127.0.0.1:{port}" in err
    assert "[docker] host" in err  # the hint names what to correct
    assert "Traceback" not in err


def test_an_unreachable_docker_host_variable_is_one_error(tmp_path: Path) -> None:
    port = free_port()
    root = new_project(tmp_path / "p", {"sessions/a.md": docker_session("echo hi")})
    code, out, err = domarkx(root, "build", env=trusted({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}))
    err += out  # the build's report of the failed task
    assert code == 1
    assert f"cannot reach the Docker engine at tcp://127.0.0.1:{port}" in err
    assert "Traceback" not in err


@pytest.mark.docker
def test_sandboxes_run_on_the_configured_engine(tmp_path: Path, tcp_engine: Forwarder) -> None:
    root = new_project(
        tmp_path / "p",
        {
            "domarkx.toml": f'[docker]\nhost = "tcp://127.0.0.1:{tcp_engine.port}"\n',
            "sessions/a.md": docker_session("echo from-the-engine; cat /etc/hostname"),
        },
    )
    # DOCKER_HOST points nowhere: only the configured host can have run it.
    env = trusted({"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"})
    code, out, err = domarkx(root, "build", env=env)
    assert code == 0, out + err
    export = (root / ".domarkx" / "exports" / "a.md").read_text()
    assert "from-the-engine" in export
    assert tcp_engine.connections > 0


@pytest.mark.docker
def test_sandboxes_run_on_the_engine_of_the_docker_context(
    tmp_path: Path, tcp_engine: Forwarder
) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker command to create a context with")
    config = tmp_path / "docker-config"
    config.mkdir()
    address = f"host=tcp://127.0.0.1:{tcp_engine.port}"
    for command in (["create", "remote", "--docker", address], ["use", "remote"]):
        subprocess.run(
            ["docker", "context", *command],
            env={**os.environ, "DOCKER_CONFIG": str(config)},
            check=True,
            capture_output=True,
        )
    root = new_project(tmp_path / "p", {"sessions/a.md": docker_session("echo via-context")})
    env = trusted({"DOCKER_CONFIG": str(config)})  # `docker context use` chose it
    code, out, err = domarkx(root, "build", env=env)
    assert code == 0, out + err
    assert "via-context" in (root / ".domarkx" / "exports" / "a.md").read_text()
    assert tcp_engine.connections > 0


@pytest.mark.docker
def test_prune_looks_on_the_configured_engine(tmp_path: Path, tcp_engine: Forwarder) -> None:
    import docker

    from domarkx.data.layout import project_id
    from domarkx.execution.engine import PROJECT_LABEL, SANDBOX_LABEL

    root = new_project(
        tmp_path / "p",
        {"domarkx.toml": f'[docker]\nhost = "tcp://127.0.0.1:{tcp_engine.port}"\n'},
    )
    (root / ".domarkx").mkdir()
    # A sandbox of this project that its build left on that engine (killed, say).
    client = docker.from_env()
    labels = {SANDBOX_LABEL: "1", PROJECT_LABEL: project_id(str(root / ".domarkx"))}
    stray = client.containers.create(BUSYBOX_IMAGE, ["sleep", "300"], labels=labels)
    try:
        # DOCKER_HOST points nowhere: only the configured host can reach the sandbox.
        env = trusted({"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"})
        code, out, err = domarkx(root, "prune", env=env)
        assert code == 0, out + err
        assert stray.id[:12] in out
        assert tcp_engine.connections > 0
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(stray.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            stray.remove(force=True)
