"""Which processes run instances of a project: ``.domarkx/owners/<pid>``.

A process that creates an instance leaves a file named by its pid, and
removes it when it exits normally (Ctrl-C, SIGTERM and SIGHUP included: see
``domarkx.signals``). A file whose process is gone is what a SIGKILL
leaves: the next build or ``prune`` sees it with one ``listdir`` and cleans
up (``InstanceManager.reap``) without reading every instance on every build.
"""

from __future__ import annotations

import atexit
import contextlib
import os

from domarkx.signals import process_alive

FOLDER = "owners"

# Store folders this process registered in (one file each).
_registered: set[str] = set()


def register(home: str | os.PathLike[str]) -> None:
    """Mark this process as running instances of the store at ``home`` (once)."""
    folder = os.path.join(os.fspath(home), FOLDER)
    if folder in _registered:
        return
    path = os.path.join(folder, str(os.getpid()))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError:
        return  # a read-only store: writing the instance will say so
    _registered.add(folder)
    atexit.register(_unregister, path, os.getpid())


def _unregister(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the hook
        with contextlib.suppress(OSError):
            os.unlink(path)


def dead(home: str | os.PathLike[str]) -> list[int]:
    """Pids that registered in the store at ``home`` and are gone (killed)."""
    folder = os.path.join(os.fspath(home), FOLDER)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit() and not process_alive(int(name))]


def forget(home: str | os.PathLike[str], pids: list[int]) -> None:
    """Drop the files of ``pids`` once what they left is cleaned up."""
    folder = os.path.join(os.fspath(home), FOLDER)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, str(pid)))
