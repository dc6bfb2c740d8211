"""The Docker engine's own behaviour: container, isolation, limits, lifecycle, errors.

What every engine does (state, timeouts, big outputs) is tested over both
engines in test_engine_local.py. These tests need a Docker engine: they skip
without one, and fail instead under CI (see tests/dockerutil.py).
"""

from __future__ import annotations

import pytest

from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.docker import DockerEngine
from domarkx.execution.engine import INSTANCE_LABEL, PROJECT_LABEL, SANDBOX_LABEL
from tests.dockerutil import (
    BUSYBOX_IMAGE,
    TEST_LABEL,
    containers_labelled,
    processes_running,
    require_image,
    secs,
    unique_test_label,
)


@pytest.fixture
def run_label():
    """A label value unique to this test, so its containers are told from others'."""
    yield from unique_test_label()


def make(tmp_path, run_label, instance: str = "inst", **config) -> DockerEngine:
    config.setdefault("image", require_image(BUSYBOX_IMAGE))
    return DockerEngine(
        ExecutionConfig(engine="docker", **config),
        tmp_path,
        labels={INSTANCE_LABEL: instance, TEST_LABEL: run_label, PROJECT_LABEL: run_label},
    )


@pytest.fixture
def sandbox(tmp_path, run_label):
    engine = make(tmp_path, run_label)
    engine.start()
    yield engine
    engine.stop()


def out(engine: DockerEngine, code: str, timeout: float = 20) -> str:
    result = engine.run("sh", code, timeout)
    assert result.ok, result
    return result.stdout


@pytest.mark.docker
def test_blocks_run_inside_the_container(sandbox):
    assert sandbox.container_id
    assert out(sandbox, "hostname; test -f /.dockerenv && echo in-docker") == (
        f"{sandbox.container_id[:12]}\nin-docker\n"
    )


@pytest.mark.docker
def test_no_network_by_default(sandbox):
    assert out(sandbox, "ls /sys/class/net") == "lo\n"


@pytest.mark.docker
def test_labels_limits_env_and_workdir(tmp_path, run_label):
    engine = make(tmp_path, run_label, memory="64m", cpus=0.5, env={"A": "b c"}, workdir="job")
    with engine:
        import docker

        attrs = docker.from_env().containers.get(engine.container_id).attrs
        assert attrs["Config"]["Labels"][SANDBOX_LABEL] == "1"
        assert attrs["Config"]["Labels"][INSTANCE_LABEL] == "inst"
        assert attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert out(engine, 'pwd; echo "$A"') == "/job\nb c\n"


@pytest.mark.docker
def test_stop_removes_the_container(tmp_path, run_label):
    engine = make(tmp_path, run_label)
    engine.start()
    out(engine, f"sleep {secs('6')} >/dev/null 2>&1 &")
    assert len(containers_labelled(TEST_LABEL, run_label)) == 1
    engine.stop()
    assert containers_labelled(TEST_LABEL, run_label) == []
    engine.stop()


@pytest.mark.docker
def test_container_outlives_a_timeout(sandbox):
    result = sandbox.run("sh", f"sleep {secs('61')}", 1)
    assert result.timed_out and result.exit_code == 124
    assert out(sandbox, "hostname") == f"{sandbox.container_id[:12]}\n"
    assert secs("61") not in out(sandbox, "ps")
    assert processes_running(secs("61")) == []


@pytest.mark.docker
def test_shell_is_sh_when_the_image_has_no_bash(sandbox):
    assert out(sandbox, "echo ${BASH_VERSION:-none}") == "none\n"


@pytest.mark.docker
def test_python_needs_python3_in_the_image(sandbox):
    with pytest.raises(EngineError, match=r"image domarkx-test:busybox has no python3"):
        sandbox.run("python", "print(1)", 20)
    assert out(sandbox, "echo still fine") == "still fine\n"


@pytest.mark.docker
def test_missing_image_is_a_clear_error(tmp_path, run_label):
    engine = make(tmp_path, run_label, image="domarkx-test:no-such-image")
    with pytest.raises(EngineError) as err:
        engine.start()
    assert "image domarkx-test:no-such-image not found" in str(err.value)
    # The hint fits a user's project, which has no bench/ folder.
    assert "docker build" in str(err.value) and "bench/" not in str(err.value)
    assert containers_labelled(TEST_LABEL, run_label) == []


def test_an_image_is_required(tmp_path):
    engine = DockerEngine(ExecutionConfig(engine="docker"), tmp_path)
    with pytest.raises(EngineError, match="needs an image"):
        engine.start()


def test_unreachable_docker_is_one_clear_line(tmp_path, monkeypatch):
    host = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    engine = DockerEngine(ExecutionConfig(engine="docker", image="busybox"), tmp_path)
    with pytest.raises(EngineError) as err:
        engine.start()
    assert err.value.message == f"cannot reach the Docker engine at {host}"
    assert "start dockerd or set DOCKER_HOST" in str(err.value)


def test_unknown_language_without_docker():
    assert not DockerEngine.supports("rust") and DockerEngine.supports("bash")


@pytest.mark.docker
def test_destroy_from_the_handle(tmp_path, run_label):
    engine = make(tmp_path, run_label)
    handle = engine.start()
    DockerEngine.destroy(handle)  # as `domarkx stop` would, from another process
    assert containers_labelled(TEST_LABEL, run_label) == []
    DockerEngine.destroy(handle)
    engine.stop()


@pytest.mark.docker
def test_prune_keeps_only_the_instances_named(tmp_path, run_label):
    live = make(tmp_path / "a", run_label, instance=f"live-{run_label}")
    stray = make(tmp_path / "b", run_label, instance=f"stray-{run_label}")
    live.start()
    stray.start()
    try:
        # Only this test's project is pruned: other tests' containers are not its own.
        removed = DockerEngine.prune(keep=frozenset({f"live-{run_label}"}), project=run_label)
        assert removed == [(stray.container_id or "")[:12]]
        assert containers_labelled(TEST_LABEL, run_label) == [live.container_id]
    finally:
        live.stop()
        stray.stop()
