"""What the turn-layer tests share: session heads, a run counted from its side-effect log.

A session's blocks log ``m<n> <nanosecond stamp>`` to a file outside the
sandbox, one line per run of a block; ``ran`` reads which ran, in order.
"""

from __future__ import annotations

from pathlib import Path

from tests.dockerutil import PYTHON_IMAGE
from tests.support import domarkx

LOCAL = "```yaml session-config\nengine: local_shell\n{extra}```\n\n"
DOCKER = f"```yaml session-config\nengine: docker\nimage: {PYTHON_IMAGE}\n{{extra}}```\n\n"


def ran(log: Path) -> list[str]:
    """Which messages ran, in order (the stamps show each was a new run)."""
    if not log.exists():
        return []
    lines = log.read_text().split()
    stamps = [int(s) for s in lines[1::2]]
    assert stamps == sorted(stamps)  # nanosecond stamps: each line a later run
    return lines[0::2]


def document(messages: list[str], head: str = LOCAL, extra: str = "") -> str:
    """A session of ``messages`` under ``head`` (LOCAL or DOCKER) with ``extra`` config."""
    return head.format(extra=extra) + "\n".join(messages)


def build_and_run(root: Path, name: str = "s") -> str:
    """Import and run the session in a fresh process; the export of the run."""
    assert domarkx(root, "import", f"sessions/{name}.md", process=True).code == 0
    done = domarkx(root, "run", name, process=True)
    assert done.code == 0, done.err
    instance = done.out.split()[-1]
    exported = domarkx(root, "export", instance, process=True)
    assert exported.code == 0, exported.err
    return exported.out
