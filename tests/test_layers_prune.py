"""`domarkx prune` removes the Docker layer image a killed save left, this project's only.

A Docker layer is an image committed from the sandbox; its record is written
after the commit. A ``domarkx run`` process killed (SIGKILL) between the two
leaves an image that no layer names. The run here is a real process that
kills itself at that point (its record writer is replaced by a SIGKILL of the
process), in two projects; ``prune`` in one removes that project's stray
image and leaves the other project's, and the images layers hold.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from domarkx.data.layout import project_id
from domarkx.execution.engine import LAYER_LABEL, PROJECT_LABEL
from tests.dockerutil import PYTHON_IMAGE, require_image
from tests.layer_support import DOCKER, build_and_run, document
from tests.support import OWN_STORE, domarkx, new_project, process_env

# `domarkx run s`, killed once the sandbox's image is committed, before its layer's record.
KILLED_AT_THE_RECORD = """\
import os, signal, sys
from domarkx.data.layers import LayerStore

def killed(self, key, record):
    os.kill(os.getpid(), signal.SIGKILL)

LayerStore.put = killed
from domarkx.cli.main import main
sys.exit(main(["run", "s"]))
"""


def layer_images(root: Path) -> list[str]:
    """The ids of the layer images labelled with the project ``root``."""
    import docker

    labels = [LAYER_LABEL, f"{PROJECT_LABEL}={project_id(str(root / '.domarkx'))}"]
    return sorted(i.id for i in docker.from_env().images.list(filters={"label": labels}))


def killed_save(root: Path) -> None:
    assert domarkx(root, "import", "sessions/s.md", process=True).code == 0
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AT_THE_RECORD],
        cwd=root,
        env=process_env(OWN_STORE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


@pytest.mark.docker
def test_prune_removes_the_image_of_a_killed_save_and_no_other_projects(tmp_path):
    require_image(PYTHON_IMAGE)
    messages = ["## assistant\n\n```bash\necho hi > /f\n```\n"]
    a = new_project(tmp_path / "a", {"sessions/s.md": document(messages, DOCKER)})
    b = new_project(tmp_path / "b", {"sessions/s.md": document(messages, DOCKER)})
    try:
        killed_save(a)
        killed_save(b)
        stray_a, stray_b = layer_images(a), layer_images(b)
        assert len(stray_a) == 1 and len(stray_b) == 1
        assert not list((a / ".domarkx" / "layers").glob("[0-9a-f][0-9a-f]/*"))  # no record

        pruned = domarkx(a, "prune", process=True)
        assert pruned.code == 0, pruned.err
        assert stray_a[0].removeprefix("sha256:")[:12] in pruned.out.split()
        assert layer_images(a) == [] and layer_images(b) == stray_b

        # An image a layer's record holds stays.
        build_and_run(a)
        held = layer_images(a)
        assert len(held) == 1
        assert domarkx(a, "prune", process=True).code == 0
        assert layer_images(a) == held
    finally:  # the test's own images and containers
        import docker

        for root in (a, b):
            domarkx(root, "prune", process=True)
            for image in layer_images(root):
                docker.from_env().images.remove(image, force=True)
