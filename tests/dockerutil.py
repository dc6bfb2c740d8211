"""Helpers for the engine tests: a Docker engine to test against, and a /proc scan.

Docker tests skip when no Docker engine answers, except under CI (``CI`` set),
where bench/docker-image.sh first tries to start one and they fail without it:
CI must run them. The busybox test image is built on the fly
when it is missing (about a second, bench/docker-image.sh); the Python image
takes about a minute of debootstrap, so it is built on the fly only under CI
and skipped elsewhere with the command that builds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from domarkx.data.layout import project_id
from domarkx.execution.engine import PROJECT_LABEL

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SCRIPT = ROOT / "bench" / "docker-image.sh"
BUSYBOX_IMAGE = "domarkx-test:busybox"
PYTHON_IMAGE = "domarkx-test:python"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so Docker tests must run)", pytrace=False)
    pytest.skip(reason)


@cache
def _docker_problem() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return f"no Docker engine answers at {host}: {type(exc).__name__}"
    return None


def require_docker() -> None:
    """Skip (fail under CI) unless a Docker engine answers.

    Under CI the image script gets one try first: it starts dockerd (and
    installs docker.io) on a machine where Docker is not running yet.
    """
    problem = _docker_problem()
    if problem and os.environ.get("CI"):
        _build()
        _docker_problem.cache_clear()
        problem = _docker_problem()
    if problem:
        _unavailable(problem)


def _have_image(image: str) -> bool:
    import docker

    try:
        docker.from_env().images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


@cache
def _build(*args: str) -> str | None:
    # Parallel test workers take turns: the first starts Docker or builds the image,
    # the next finds it there (the script skips images that exist).
    with open(Path(tempfile.gettempdir()) / "domarkx-test-images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["bash", str(IMAGE_SCRIPT), *args], capture_output=True, text=True, timeout=600
        )
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def require_image(image: str) -> str:
    """The test image ``image``, built if it is missing and cheap (or under CI)."""
    require_docker()
    if _have_image(image):
        return image
    if image == PYTHON_IMAGE and not os.environ.get("CI"):
        pytest.skip(
            f"image {image} not built (debootstrap, about a minute): "
            "run bench/docker-image.sh --python"
        )
    problem = _build("--python") if image == PYTHON_IMAGE else _build()
    if problem or not _have_image(image):
        _unavailable(f"could not build {image} with bench/docker-image.sh: {problem}")
    return image


def docker_session(code: str) -> str:
    """A session whose one ``sh`` block runs in the busybox test image."""
    return (
        f"```yaml session-config\nengine: docker\nimage: {BUSYBOX_IMAGE}\ntimeout: 60\n```\n\n"
        f"## assistant\n\n```sh\n{code}\n```\n"
    )


def project_containers(root: Path) -> list[str]:
    """Ids of every container of the project ``root`` (its store ``root/.domarkx``)."""
    return containers_labelled(PROJECT_LABEL, project_id(str(root / ".domarkx")))


def containers_labelled(label: str, value: str) -> list[str]:
    """Ids of every container (running or not) with ``label=value``."""
    import docker

    client = docker.from_env()
    # sparse: the listing alone, no inspect of each container, which fails on one that a
    # run removes between the two calls.
    found = client.containers.list(all=True, sparse=True, filters={"label": f"{label}={value}"})
    return [c.id for c in found]


# Sleeps that only this test run starts, so that a /proc scan cannot mistake
# another run's processes (another checkout's tests) for leftovers of this one.
# Its last digit is the parallel worker's number (pytest-xdist's gw0, gw1...):
# workers of one run never share an id.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
RUN_ID = f"{secrets.randbelow(10**5):05d}{_WORKER % 10}"


def secs(tag: str) -> str:
    """A `sleep` argument unique to this test run: ``987.<tag><run id>`` seconds."""
    return f"987.{tag}{RUN_ID}"


def processes_running(text: str, within: float = 0.0) -> list[str]:
    """Live processes whose command line contains ``text`` (``pid: cmdline``).

    Containers' processes show in the host's /proc too. With ``within``, wait
    that long for them to go before answering. Zombies have no command line.
    """
    needle = text.encode()
    end = time.monotonic() + within
    while True:
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{name}: {shown}")
        if not found or time.monotonic() >= end:
            return found
        time.sleep(0.02)


def started(text: str, within: float = 5.0) -> bool:
    """Whether a process with ``text`` in its command line shows up within ``within`` s.

    A block's background process may still be between fork and exec when the
    block ends.
    """
    end = time.monotonic() + within
    while not processes_running(text):
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


TEST_LABEL = "io.domarkx.test"


def unique_test_label() -> Iterator[str]:
    """A label value unique to one test (for ``TEST_LABEL``); its containers go afterwards.

    The body of the Docker tests' ``run_label`` fixtures: containers of this test
    are told from everyone else's, and removed whatever the test left.
    """
    require_docker()
    value = secrets.token_hex(6)
    yield value
    import docker

    client = docker.from_env()
    for container in client.containers.list(
        all=True, sparse=True, filters={"label": f"{TEST_LABEL}={value}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):  # gone by itself meanwhile
            container.remove(force=True)
