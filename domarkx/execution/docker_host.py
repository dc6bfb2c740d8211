"""Which Docker engine runs the sandboxes: ``[docker] host``, ``DOCKER_HOST`` or the context.

The engine may be another machine's (``ssh://user@host``, ``tcp://host:2376``)
while the build runs here. The order is the Docker CLI's: ``[docker] host``
in the project's configuration, else ``DOCKER_HOST`` (with
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``), else the current context
(``DOCKER_CONTEXT``, or ``docker context use``), else the local socket.
``ssh://`` goes through the system's ``ssh``, with the user's keys and ssh
config. An engine that cannot be reached is one ``EngineError`` naming it.

The ``docker`` package is imported inside functions only (its start-up cost).
"""

from __future__ import annotations

import os
from collections.abc import Container
from typing import Any

from domarkx.errors import EngineError

DEFAULT_HOST = "unix:///var/run/docker.sock"
HINT_START = "start dockerd or set DOCKER_HOST"


def address(host: str | None = None) -> str:
    """The engine's address, for messages."""
    return host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def client(host: str | None = None) -> Any:
    """A ``docker.DockerClient`` of the engine (``host``: ``[docker] host``), or an EngineError."""
    import docker  # the SDK costs ~190 ms at start-up: loaded once a container is used

    tls: Any = None
    try:
        if host is None and not os.environ.get("DOCKER_HOST"):
            host, tls = _context_endpoint()
        if host is None:
            return docker.from_env()
        return docker.DockerClient(base_url=host, tls=tls, use_ssh_client=host.startswith("ssh://"))
    except docker.errors.DockerException as exc:
        hint = HINT_START
        if host is not None:
            hint = (
                "start dockerd there, or correct [docker] host (or DOCKER_HOST, the Docker "
                f"context); `docker -H {host} info` tries the same address"
            )
        raise EngineError(f"cannot reach the Docker engine at {address(host)}", hint=hint) from exc


def remove_containers(
    host: str | None, labels: list[str], keep_label: str, keep: Container[str]
) -> list[str]:
    """Remove every container on the engine that has all ``labels``, but those whose
    ``keep_label`` is in ``keep``; their short ids (``prune``)."""
    import docker  # the SDK's start-up cost, as above

    api = client(host).api
    removed = []
    for info in api.containers(all=True, filters={"label": labels}):
        if (info.get("Labels") or {}).get(keep_label) in keep:
            continue
        try:
            api.remove_container(info["Id"], force=True)
        except docker.errors.NotFound:
            continue
        removed.append(info["Id"][:12])
    return removed


def _context_endpoint() -> tuple[str | None, Any]:
    """The engine of the Docker CLI's current context (None: the default, the local socket)."""
    from docker.context import ContextAPI  # the SDK's start-up cost, as above

    name = os.environ.get("DOCKER_CONTEXT") or None
    try:
        context = ContextAPI.get_context(name)
    except Exception as exc:
        raise EngineError(
            f"cannot read the Docker context {name or 'in use'}: {exc}",
            hint="`docker context ls` lists them; DOCKER_HOST overrides the context",
        ) from None
    if context is None:
        raise EngineError(
            f"no Docker context {name!r}", hint="`docker context ls` lists them (DOCKER_CONTEXT)"
        )
    if context.name == "default":
        return None, None
    return context.Host, context.TLSConfig
