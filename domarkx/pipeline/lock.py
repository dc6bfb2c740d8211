"""The build lock: one build at a time per project (``.domarkx/build.lock``).

Two builds in one project would race on doit's dependency database and on
the caches, so a build takes an exclusive ``flock`` before running any task
and the second one stops with a clear message. The kernel drops the lock
when its process dies, even by SIGKILL, so a killed build never leaves a
stale lock behind. The lock is re-entrant within one process (``domarkx
build`` takes it, then doit's reporter asks again), and worker processes of
``doit -n N`` inherit it with the open file.
"""

from __future__ import annotations

import fcntl
import os
import time

from domarkx.errors import BuildLockedError

# path -> [file descriptor, how many times this process acquired it]
_held: dict[str, list[int]] = {}


def acquire(path: str, wait: bool = False) -> None:
    """Take the lock at ``path``; ``wait`` blocks until it is free, else it raises."""
    path = os.path.abspath(path)
    if path in _held:
        _held[path][1] += 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise BuildLockedError(
            "another build is running in this project" + (f" ({holder})" if holder else ""),
            file=_display(path),
            hint="wait for it to finish, then build again",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}\n".encode(), 0)
    _held[path] = [fd, 1]


def release(path: str) -> None:
    """Give back one ``acquire``; the lock is dropped when the last one is given back."""
    path = os.path.abspath(path)
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[path]
    try:
        os.ftruncate(entry[0], 0)
        fcntl.flock(entry[0], fcntl.LOCK_UN)
    finally:
        os.close(entry[0])


def is_held(path: str) -> bool:
    """Whether this process holds the lock at ``path``."""
    return os.path.abspath(path) in _held


class BuildLock:
    """``with BuildLock(path):`` around a build."""

    def __init__(self, path: str, wait: bool = False) -> None:
        self.path = path
        self.wait = wait

    def __enter__(self) -> BuildLock:
        acquire(self.path, self.wait)
        return self

    def __exit__(self, *exc: object) -> None:
        release(self.path)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _display(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
