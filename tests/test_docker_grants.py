"""Docker sandboxes are hardened, and what goes beyond them is the user's to grant.

Real containers (marker ``docker``): capabilities dropped (no raw sockets),
``no-new-privileges``, a process-count and a memory limit, and no network
other than ``none`` unless the project's configuration lists it.
"""

from __future__ import annotations

import pytest

from domarkx.cli.main import main
from domarkx.config import ProjectConfig
from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.docker import DockerEngine
from domarkx.execution.engine import INSTANCE_LABEL
from tests.dockerutil import (
    BUSYBOX_IMAGE,
    PYTHON_IMAGE,
    TEST_LABEL,
    containers_labelled,
    require_image,
    unique_test_label,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def label():
    """A label value unique to this test, so its containers are told from others'."""
    yield from unique_test_label()


@pytest.fixture
def engine(tmp_path, label):
    made: list[DockerEngine] = []

    def make(
        project: ProjectConfig | None = None, image: str = BUSYBOX_IMAGE, **config
    ) -> DockerEngine:
        sandbox = DockerEngine(
            ExecutionConfig(engine="docker", image=require_image(image), **config),
            tmp_path,
            labels={INSTANCE_LABEL: "inst", TEST_LABEL: label},
        )
        sandbox.project = project
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.stop()


def sh(sandbox: DockerEngine, code: str, timeout: float = 30) -> str:
    result = sandbox.run("sh", code, timeout)
    assert result.ok, result
    return result.stdout


def test_no_capabilities_and_no_new_privileges(engine):
    status = sh(engine(), "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status")
    assert status.split() == [
        "CapPrm:",
        "0000000000000000",
        "CapEff:",
        "0000000000000000",
        "NoNewPrivs:",
        "1",
    ]


def test_a_raw_packet_socket_is_refused(engine):
    sandbox = engine(image=PYTHON_IMAGE)
    result = sandbox.run(
        "python",
        "import socket\n"
        "try:\n"
        "    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "    print('raw socket opened')\n"
        "except PermissionError as err:\n"
        "    print('refused', err.errno)\n",
        30,
    )
    assert result.stdout == "refused 1\n", result


def test_the_process_count_is_limited(engine):
    sandbox = engine(ProjectConfig.model_validate({"docker": {"pids_limit": 24}}))
    assert (
        sh(sandbox, "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max")
        == "24\n"
    )
    # A fork bomb in miniature: 60 sleeps asked for, the shell cannot fork past the limit.
    bomb = sandbox.run(
        "sh", 'i=0; p=; while [ $i -lt 60 ]; do sleep 300 & p="$p $!"; i=$((i+1)); done', 30
    )
    assert "can't fork" in bomb.stderr or "Resource temporarily unavailable" in bomb.stderr, bomb
    # Shell built-ins only: at the limit, nothing else can start.
    count = sh(sandbox, "n=0; for d in /proc/[0-9]*; do n=$((n+1)); done; echo $n; kill $p")
    assert 20 <= int(count) <= 24


def memory_limit(sandbox: DockerEngine) -> int:
    text = sh(
        sandbox,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    return int(text)


def test_memory_has_a_default_limit_a_session_can_only_lower(engine):
    assert memory_limit(engine()) == 2 << 30
    assert memory_limit(engine(memory="64m")) == 64 << 20
    assert memory_limit(engine(memory="100g")) == 2 << 30
    granted = ProjectConfig.model_validate({"docker": {"memory": "256m"}})
    assert memory_limit(engine(granted)) == 256 << 20


def test_a_network_is_used_only_when_granted(engine):
    with pytest.raises(EngineError, match="'host'"):
        engine(network="host").start()
    with pytest.raises(EngineError, match="'bridge'"):
        engine(network="bridge").start()
    granted = ProjectConfig.model_validate({"docker": {"networks": ["bridge"]}})
    assert "eth0" in sh(engine(granted, network="bridge"), "ls /sys/class/net").split()


SESSION = """\
```yaml session-config
engine: docker
image: {image}
network: host
```

## assistant

```sh
ls /sys/class/net
```
"""


def test_a_session_asking_for_the_host_network_is_refused_at_its_line(project, capsys):
    root = project({"sessions/net.md": SESSION.format(image=require_image(BUSYBOX_IMAGE))})
    assert main(["import", "sessions/net.md"]) == 0
    capsys.readouterr()
    code = main(["run", "--yes", "net"])
    err = capsys.readouterr().err
    assert code == 1
    assert "sessions/net.md:4: " in err and "'host'" in err
    assert 'networks = ["host"]' in err and str(root / "domarkx.toml") in err
    assert not (root / ".domarkx" / "instances").exists()  # nothing was started

    (root / "domarkx.toml").write_text('[docker]\nnetworks = ["host"]\n')
    code = main(["run", "net"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert containers_labelled(INSTANCE_LABEL, out.strip()) == []  # removed after the run


SCRIPTED = """\
---
scripted_replies:
  - "```sh\\necho from-the-model\\n```"
  - "Done."
---

```yaml session-config
engine: docker
image: {image}
model:
  provider: scripted
```

## user

> Say something.
"""


def test_model_written_code_runs_in_docker_without_asking(project, capsys):
    project({"sessions/m.md": SCRIPTED.format(image=require_image(BUSYBOX_IMAGE))})
    assert main(["import", "sessions/m.md"]) == 0
    capsys.readouterr()
    code = main(["run", "m"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert main(["export", out.strip()]) == 0
    assert "from-the-model\n" in capsys.readouterr().out
