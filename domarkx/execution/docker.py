"""The Docker engine: one container per sandbox, one persistent process per language in it.

Design:

- ``start()`` creates one container from ``config.image`` (never pulled: a
  missing image is an error) that only sleeps (``sleep infinity`` under
  Docker's init, which reaps what blocks leave behind). It runs with
  ``network_mode=config.network`` (``none`` by default; any other only when
  the project's configuration lists it), every capability dropped,
  ``no-new-privileges``, the project's process-count and memory limits (a
  session may only lower the memory), the CPU limit of the config,
  ``config.env`` and the labels ``SANDBOX_LABEL`` plus the engine's own (the
  instance id), so ``prune`` finds leftovers.
- Blocks run in one persistent shell per container (``bash`` when the image
  has it, else ``sh``, e.g. busybox) and one ``python3`` driver, each started
  once through an exec socket (``exec_create(stdin=True)`` +
  ``exec_start(socket=True)``; without a tty Docker multiplexes stdout and
  stderr in frames with 8-byte headers). The block protocol is the one both
  engines speak (``domarkx.execution.protocol``): the block goes in on stdin, a
  random sentinel with the exit status comes out on both streams. No container
  and no exec is made per block (well under a millisecond per block;
  ``bench/blocks.py``).
- Python blocks need ``python3`` in the image; that is checked once, on the
  first Python block ("image X has no python3").
- A block that outlives its timeout is killed inside the container together
  with every process carrying its language process's marker in the
  environment (``DOMARKX_SANDBOX``, found in ``/proc`` by a short script run
  through a second exec), and reported with ``timed_out=True`` and exit code
  124. The container stays; that language's process restarts on its next
  block with its state lost. ``exit N`` in a shell block ends that shell: the
  block reports ``N`` and the next block starts a fresh one.
- ``stop()`` removes the container (forced), ``destroy(handle)`` does the same
  from another process, and ``prune(keep)`` removes every labelled container
  of one project (``io.domarkx.project``) whose ``io.domarkx.instance``
  label is not in ``keep`` (the ids of the instances still running).

The ``docker`` package is imported inside functions only: it costs ~140 ms.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import time
from collections.abc import Container
from pathlib import Path
from typing import Any

from domarkx.config import MIN_MEMORY, ProjectConfig, size_in_bytes
from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution import docker_host, docker_layers
from domarkx.execution.docker_exec import ExecChannel
from domarkx.execution.engine import (
    INSTANCE_LABEL,
    LAYER_LABEL,
    PROJECT_LABEL,
    SANDBOX_LABEL,
    BlockResult,
    Engine,
    Refusal,
    block_language,
)
from domarkx.execution.protocol import (
    MARKER_VAR,
    PYTHON_DRIVER,
    BlockCapture,
    new_token,
    python_payload,
    shell_payload,
    timed_out_result,
)

# The shell that runs shell blocks: bash where the image has it, else sh.
SHELL_COMMAND = [
    "sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc; fi; exec sh",
]

# Kills, inside the container, every process whose environment has the entry
# "$1" (a marker), repeating until none is left. Without grep or tr it kills
# everything but the container's init.
KILL_SCRIPT = r"""
{ command -v grep && command -v tr; } >/dev/null 2>&1 || { kill -9 -1; exit 0; }
i=0
while [ "$i" -lt 40 ]; do
    found=
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$$" ] && continue
        if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qxF "$1"; then
            kill -9 "$pid" 2>/dev/null
            found=1
        fi
    done
    [ -z "$found" ] && exit 0
    i=$((i + 1))
    sleep 0.05 2>/dev/null || sleep 1
done
"""

HINT_START = "start dockerd or set DOCKER_HOST"


def _docker_host() -> str:
    return docker_host.address()


def connect(host: str | None = None) -> Any:
    """A low-level Docker API client (``host``: ``[docker] host``), or a one-line EngineError."""
    return docker_host.client(host).api


def _api_error(exc: Exception, doing: str) -> EngineError:
    """An EngineError for a failed Docker call: the daemon's own words, one line."""
    import requests  # comes with the docker SDK, as costly (~190 ms): only on a failed call

    if isinstance(exc, requests.exceptions.ConnectionError):
        return EngineError(f"lost the Docker engine at {_docker_host()}", hint=HINT_START)
    explanation = getattr(exc, "explanation", None) or str(exc)
    return EngineError(f"docker could not {doing}: {' '.join(str(explanation).split())}")


class DockerEngine(Engine):
    """Runs blocks in persistent processes inside one container per sandbox."""

    name = "docker"
    isolated = True

    def __init__(
        self, config: ExecutionConfig, workdir: Path, labels: dict[str, str] | None = None
    ) -> None:
        super().__init__(config, workdir, labels)
        self.sandbox_id = secrets.token_hex(8)
        self.container_id: str | None = None
        self._api: Any = None
        self._channels: dict[str, tuple[ExecChannel, str]] = {}
        self._has_python: bool | None = None
        self._stopped = False
        self._layer_image: str | None = None  # start from this layer's image (use_files)

    # -- lifecycle

    def _client(self) -> Any:
        if self._api is None:
            self._api = connect(self.project.docker.host if self.project else None)
        return self._api

    def handle(self) -> dict[str, Any]:
        found = {
            "container": self.container_id,
            "image": self.config.image,
            "sandbox": self.sandbox_id,
        }
        if self.project is not None and self.project.docker.host:
            found["host"] = self.project.docker.host  # where to remove it from later
        return found

    def start(self) -> dict[str, Any]:
        if self._stopped:
            raise EngineError("this sandbox was stopped", hint="create a new engine to run again")
        if self.container_id is not None:
            return self.handle()
        image = self._layer_image or self.config.image
        if not image:
            raise EngineError(
                "the docker engine needs an image",
                hint="set `image:` in session-config to an image you have "
                "(`docker images` lists them)",
            )
        import docker  # the SDK costs ~190 ms at start-up: loaded once a container is used

        api = self._client()
        workdir = self.config.workdir
        if workdir and not workdir.startswith("/"):
            workdir = posixpath.join("/", workdir)
        host = self.host_settings()
        labels = {SANDBOX_LABEL: "1", **self.labels}
        for init in (True, False):  # Docker's init reaps orphans; not every engine has it
            try:
                container = api.create_container(
                    image,
                    command=["sleep", "infinity"],
                    labels=labels,
                    environment=dict(self.config.env),
                    working_dir=workdir,
                    host_config=api.create_host_config(init=init, **host),
                )
                self.container_id = container["Id"]
                api.start(self.container_id)
                break
            except docker.errors.ImageNotFound as exc:
                raise EngineError(
                    f"image {image} not found",
                    hint="build it (docker build), fetch it (docker pull) or name another "
                    "one in session-config; domarkx never pulls images",
                    key="image",
                ) from exc
            except docker.errors.APIError as exc:
                self._remove_quietly()
                if init and "init" in str(exc).lower():
                    continue
                raise _api_error(exc, f"start a container from {image}") from exc
            except Exception as exc:
                self._remove_quietly()
                raise _api_error(exc, f"start a container from {image}") from exc
        return self.handle()

    @classmethod
    def refusal(cls, config: ExecutionConfig, project: ProjectConfig) -> Refusal | None:
        """A network other than ``none`` needs the project's grant (``[docker] networks``)."""
        network = config.network or "none"
        if (engine := super().refusal(config, project)) is not None:
            return engine  # `[engines] allowed` of the project
        if network == "none" or network in project.docker.networks:
            return None
        return Refusal(
            "network",
            f"session-config asks for the Docker network {network!r}, which the project's "
            "configuration does not grant",
            f"if sessions of this project may use it, add to {project.describe()}:\n"
            f'    [docker]\n    networks = ["{network}"]',
        )

    def host_settings(self) -> dict[str, Any]:
        """The container's limits: the project's (``[docker]``), lowered by the session's.

        Every capability is dropped (the project may give some back), privileges
        cannot be gained (setuid binaries do nothing), and the number of processes
        and the memory are bounded.
        """
        project = self.project or ProjectConfig()
        refused = self.refusal(self.config, project)
        if refused is not None:
            raise EngineError(refused.message, hint=refused.hint)
        memory = size_in_bytes(project.docker.memory)
        if self.config.memory:
            try:
                # Docker reads 0 as "no limit": a session may lower the limit, never lift it.
                memory = min(memory, max(size_in_bytes(self.config.memory), MIN_MEMORY))
            except ValueError:
                raise EngineError(
                    f"memory {self.config.memory!r} is not a size",
                    hint="write it as Docker does: 512m, 2g",
                ) from None
        return {
            "network_mode": self.config.network or "none",
            "mem_limit": memory,
            "memswap_limit": memory,  # no swap beyond the limit
            "nano_cpus": int(self.config.cpus * 1e9) if self.config.cpus else None,
            "pids_limit": project.docker.pids_limit,
            "cap_drop": ["ALL"],
            "cap_add": list(project.docker.cap_add) or None,
            "security_opt": ["no-new-privileges"],
        }

    def _remove_quietly(self) -> None:
        if self.container_id is not None:
            with contextlib.suppress(Exception):
                self._client().remove_container(self.container_id, force=True)
            self.container_id = None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            channel.close()
        if self.container_id is None:
            return
        container, self.container_id = self.container_id, None
        import docker  # the SDK costs ~190 ms at start-up: loaded once a container is used

        try:
            self._client().remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            raise _api_error(exc, f"remove container {container[:12]}") from exc

    @classmethod
    def destroy(cls, handle: dict[str, Any]) -> None:
        container = handle.get("container")
        if not container:
            return
        import docker  # the SDK costs ~190 ms at start-up: loaded once a container is used

        try:
            connect(handle.get("host")).remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise _api_error(exc, f"remove container {container[:12]}") from exc

    @classmethod
    def prune(cls, keep: Container[str] = frozenset(), project: str | None = None) -> list[str]:
        return cls.prune_project(keep, project or "", ProjectConfig())

    @classmethod
    def prune_project(
        cls, keep: Container[str], project: str, settings: ProjectConfig
    ) -> list[str]:
        """On the project's engine: ``[docker] host``, else DOCKER_HOST, else the context."""
        if not project:
            return []  # unscoped: nothing is known to be this project's
        labels = [SANDBOX_LABEL, f"{PROJECT_LABEL}={project}"]
        return docker_host.remove_containers(settings.docker.host, labels, INSTANCE_LABEL, keep)

    # -- blocks

    def run(self, language: str, code: str, timeout: float | None = None) -> BlockResult:
        return self._run(language, code, timeout)

    def run_internal(
        self, language: str, code: str, timeout: float, count: int | None = None
    ) -> BlockResult:
        return self._run(language, code, timeout, internal=True, count=count)

    def _run(
        self,
        language: str,
        code: str,
        timeout: float | None,
        internal: bool = False,
        count: int | None = None,
    ) -> BlockResult:
        lang = block_language(self.name, language)
        if timeout is None:
            timeout = self.config.timeout
        self.start()
        start = time.monotonic()
        channel, token = self._channel(lang)
        if internal and lang == "python":
            count = channel.blocks if count is None else count
        elif not internal:
            channel.blocks += 1
        if count is not None:
            channel.blocks = count
        if lang == "python":
            payload = python_payload(code, count if internal else None)
        else:
            payload = shell_payload(code, token)
        capture = BlockCapture(token, channel.pending)
        deadline = start + timeout
        try:
            channel.send(payload)
            while not capture.done and not channel.eof:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return self._timed_out(lang, channel, capture, timeout, start)
                channel.read(capture, wait)
        except OSError:
            channel.eof = True
        if capture.done:
            channel.pending = capture.rest
            out, err = capture.text()
            return BlockResult(out, err, capture.status, time.monotonic() - start)
        # The process ended (``exit``, a crash): the next block starts a fresh one.
        del self._channels[lang]
        try:
            status = channel.exit_code()
        except Exception as exc:
            raise _api_error(exc, "inspect a finished block") from exc
        finally:
            channel.close()
        out, err = capture.text()
        return BlockResult(out, err, status, time.monotonic() - start)

    def _timed_out(
        self,
        lang: str,
        channel: ExecChannel,
        capture: BlockCapture,
        timeout: float,
        start: float,
    ) -> BlockResult:
        del self._channels[lang]
        try:
            self._exec_wait(["sh", "-c", KILL_SCRIPT, "sh", f"{MARKER_VAR}={channel.marker}"])
            # Collect what the block printed before it died.
            end = time.monotonic() + 1.0
            while not channel.eof and time.monotonic() < end:
                channel.read(capture, end - time.monotonic())
        finally:
            channel.close()
        return timed_out_result(capture, lang, timeout, start)

    # -- layers (domarkx.session.layers): the file system as a committed image

    layers_supported = True
    prune_layers = classmethod(docker_layers.prune_images)  # what a killed save left

    def live_languages(self) -> list[str]:
        return list(self._channels)

    def python_blocks(self) -> int:
        found = self._channels.get("python")
        return found[0].blocks if found is not None else 0

    def background_processes(self) -> list[str]:
        if self.container_id is None:
            return []
        needle = f"{MARKER_VAR}={self.sandbox_id}:"
        script = (
            'for d in /proc/[0-9]*; do tr "\\0" "\\n" <"$d/environ" 2>/dev/null | '
            'grep -q "^$1" && echo "${d#/proc/}"; done'
        )
        _, out = self._exec_wait(["sh", "-c", script, "sh", needle])
        pids = out.decode(errors="replace").split()
        extra = len(pids) - len(self._channels)
        if extra > 0:
            return [f"{extra} background process(es) still running in the container"]
        return []

    def save_files(self, objects: Path) -> tuple[dict[str, Any], int, list[str]]:
        assert self.container_id is not None
        project = self.labels.get(PROJECT_LABEL, "")
        api = self._client()
        try:
            image = api.commit(
                self.container_id,
                repository="domarkx-layer",
                tag=secrets.token_hex(8),
                conf={"Labels": {LAYER_LABEL: "1", PROJECT_LABEL: project}},
            )["Id"]
            size = api.inspect_image(image).get("Size", 0)
            base = api.inspect_image(self._layer_image or self.config.image).get("Size", 0)
        except Exception as exc:
            return {}, 0, [f"docker could not commit the container: {exc}"]
        return {"image": image}, max(0, int(size) - int(base)), []

    def use_files(self, files: dict[str, Any], objects: Path) -> None:
        self._layer_image = files.get("image")

    @classmethod
    def files_missing(cls, files: dict[str, Any], objects: Path) -> str | None:
        image = files.get("image")
        if not image:
            return "the layer kept no image"
        try:
            connect().inspect_image(image)
        except Exception:
            return f"its image {image[7:19]} is gone"
        return None

    @classmethod
    def forget_files(cls, files: dict[str, Any], host: str | None = None) -> None:
        image = files.get("image")
        if image:
            with contextlib.suppress(Exception):
                connect(host).remove_image(image, force=True)

    def _exec_wait(self, cmd: list[str]) -> tuple[int | None, bytes]:
        """Run a short command in the container to its end (not used per block)."""
        api = self._client()
        try:
            exec_id = api.exec_create(self.container_id, cmd, stdout=True, stderr=True)["Id"]
            output = api.exec_start(exec_id)
            return api.exec_inspect(exec_id).get("ExitCode"), output
        except Exception as exc:
            raise _api_error(exc, f"run {cmd[0]} in container {self.container_id}") from exc

    def _channel(self, lang: str) -> tuple[ExecChannel, str]:
        found = self._channels.get(lang)
        if found is not None:
            return found
        assert self.container_id is not None
        token = new_token()
        if lang == "python":
            if self._has_python is None:
                status, _ = self._exec_wait(["sh", "-c", "command -v python3"])
                self._has_python = status == 0
            if not self._has_python:
                raise EngineError(
                    f"image {self.config.image} has no python3",
                    hint="use an image with python3 or run only shell blocks",
                )
            cmd = ["python3", "-c", PYTHON_DRIVER, token]
        else:
            cmd = SHELL_COMMAND
        marker = f"{self.sandbox_id}:{lang}:{secrets.token_hex(4)}"
        try:
            channel = ExecChannel(self._client(), self.container_id, cmd, marker)
        except Exception as exc:
            raise _api_error(exc, f"start {cmd[0]} in container {self.container_id[:12]}") from exc
        self._channels[lang] = (channel, token)
        return channel, token
