"""The Docker engine's layer images that no layer holds: what a killed save leaves.

A layer's file system is an image committed from the sandbox (``DockerEngine.
save_files``), labelled with ``LAYER_LABEL`` and the project (``PROJECT_LABEL``).
The layer's record is written after the commit; a process killed between the
two leaves an image that no record names. ``prune_images`` finds this
project's such images by their labels (never another project's) and removes
them. The ``docker`` package is imported inside the function (start-up cost).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from domarkx.execution import docker_host
from domarkx.execution.engine import LAYER_LABEL, PROJECT_LABEL


def prune_images(
    cls: Any, keep: Container[str], project: str, host: str | None = None
) -> list[str]:
    """Remove ``project``'s layer images whose id is not in ``keep``; their short ids.

    ``cls``: the engine class (this is its ``prune_layers``).
    """
    if not project:
        return []  # unscoped: nothing is known to be this project's
    import docker  # reason: the SDK costs ~140 ms at start-up, loaded when Docker is used

    api = docker_host.client(host).api
    removed = []
    labels = [LAYER_LABEL, f"{PROJECT_LABEL}={project}"]
    for info in api.images(filters={"label": labels}):
        image = str(info.get("Id") or "")
        if not image or image in keep:
            continue
        try:
            api.remove_image(image, force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError:
            continue  # in use by a container still running: the next prune
        removed.append(image.removeprefix("sha256:")[:12])
    return removed
