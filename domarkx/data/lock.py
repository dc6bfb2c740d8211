"""The build lock: one build at a time per project (``.domarkx/build.lock``).

Two builds in one project would race on doit's dependency database and on
the caches, so a build takes an exclusive lock before running any task and
the second one stops with a clear message. The lock is a POSIX record lock
(``lockf``), which belongs to the process that took it: a worker forked by
the build (``doit -n N``, the cold-build workers) does not hold it, so when
the build dies, even by SIGKILL, the kernel drops it at once, whatever its
workers are doing. (An ``flock`` is shared with every forked child and
outlives the build while one of them is alive.) The lock is re-entrant
within one process (``domarkx build`` takes it, then doit's reporter asks
again).

The holder writes its pid into the file and empties it when it lets go, so
the next build can tell that the last one ended without letting go (it was
killed) and clean up what it left: ``took_over``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from domarkx.errors import BuildLockedError, StoreError

# path -> [file descriptor, how many times this process acquired it]
_held: dict[str, list[int]] = {}
# path -> what the file said when this process took the lock: a build that ended
# without letting go (killed) left its pid there.
_previous: dict[str, str] = {}


def acquire(path: str, wait: bool = False, doing: str = "build") -> None:
    """Take the lock at ``path``; ``wait`` blocks until it is free, else it raises.

    ``doing`` names what waits for the lock, for the hint (``build``, ``prune``).
    """
    path = os.path.abspath(path)
    if path in _held:
        _held[path][1] += 1
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise StoreError(
            f"cannot write the build lock: {err.strerror or err}",
            file=_display(path),
            hint="make the store writable (or set DOMARKX_HOME to a writable folder)",
        ) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as err:
        holder = _holder(fd)
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise BuildLockedError(
            "another build is running in this project" + (f" ({holder})" if holder else ""),
            file=_display(path),
            hint=f"wait for it to finish, then {doing} again",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    _previous[path] = _holder(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}\n".encode(), 0)
    _held[path] = [fd, 1]


def took_over(path: str) -> str:
    """What the last holder left in the lock file if it died holding it (else "").

    Answered once per taking of the lock: the caller cleans up, once.
    """
    return _previous.pop(os.path.abspath(path), "")


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
        fcntl.lockf(entry[0], fcntl.LOCK_UN)
    finally:
        os.close(entry[0])


def is_held(path: str) -> bool:
    """Whether this process holds the lock at ``path``."""
    return os.path.abspath(path) in _held


class BuildLock:
    """``with BuildLock(path):`` around a build."""

    def __init__(self, path: str, wait: bool = False, doing: str = "build") -> None:
        self.path = path
        self.wait = wait
        self.doing = doing

    def __enter__(self) -> BuildLock:
        acquire(self.path, self.wait, self.doing)
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
