"""What the processes of a build's worker pool share, and the loop every worker runs.

A worker is either forked from the build's process or handed to it by the
build daemon (``daemon``), a process it did not start. Both are given the
same things as file descriptors, which ``fork`` copies and a Unix socket
passes (``SCM_RIGHTS``), so one loop serves both:

- ``Shared``: which sessions are claimed, how far each is wanted, and each
  worker's state, in one small memory file all of them map; a lock on that
  file (``lockf``, between processes) plus a thread lock (between the
  build's threads) guards it;
- the start pipe: the build closes its write end when the run starts, and
  the end of file wakes every worker (a killed build leaves nothing in a bad
  state);
- one result pipe per worker: length-prefixed pickled ``(name, result)``
  frames; its end of file tells the build that the worker is gone, however
  it ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import pickle
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

# A worker's state: waiting for the run, working, told to go.
WAITING, WORKING, DISMISSED = 0, 1, 2

# A worker's work: take one session (by name) as far as the stage bits allow.
Work = Callable[[str, int], Any]

_LENGTH = struct.Struct("<I")

# This process is a pool's worker (it starts no pool of its own).
worker_process = False


class Shared:
    """Claims, wanted stages and worker states, in a memory file every process of a pool maps."""

    def __init__(self, fd: int, sessions: int, workers: int) -> None:
        self.fd = fd
        self.sessions = sessions
        self.workers = workers
        self.map = mmap.mmap(fd, max(1, 2 * sessions + workers))
        self.threads = threading.Lock()

    @classmethod
    def create(cls, sessions: int, workers: int) -> Shared:
        """A new, zeroed memory file for ``sessions`` and ``workers``."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("domarkx-pool", os.MFD_CLOEXEC)
        else:
            # reason: tempfile costs ~3 ms of import; only where there is no memfd (macOS)
            import tempfile

            fd, path = tempfile.mkstemp(prefix="domarkx-pool-")
            os.unlink(path)
        os.ftruncate(fd, max(1, 2 * sessions + workers))
        return cls(fd, sessions, workers)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the pool's lock: this process's threads first, then the other processes."""
        with self.threads:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def claimed(self, index: int) -> bool:
        return bool(self.map[index])

    def claim(self, index: int) -> None:
        self.map[index] = 1

    def wanted(self, index: int) -> int:
        return self.map[self.sessions + index]

    def want(self, index: int, bits: int) -> None:
        self.map[self.sessions + index] = bits

    def state(self, slot: int) -> int:
        return self.map[2 * self.sessions + slot]

    def set_state(self, slot: int, state: int) -> None:
        self.map[2 * self.sessions + slot] = state

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def send(fd: int, item: Any) -> None:
    """Write one frame (a pickled ``item``) to a result pipe."""
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def frames(fd: int) -> Iterator[Any]:
    """The items of a result pipe, until its end of file (the worker is gone)."""
    buffer = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + size:
                break
            yield pickle.loads(buffer[_LENGTH.size : _LENGTH.size + size])
            buffer = buffer[_LENGTH.size + size :]


def work_loop(
    shared: Shared, names: list[str], slot: int, work: Work, go: int, results: int
) -> None:
    """A worker's life once it is ready: wait for the run, then claim sessions nobody claimed.

    ``go`` is the start pipe's read end, ``results`` this worker's result pipe.
    """
    os.read(go, 1)  # an end of file: the run started (or the build ended)
    with shared.locked():
        if shared.state(slot) == DISMISSED:
            return
        shared.set_state(slot, WORKING)
    index = 0
    while True:
        with shared.locked():
            while index < len(names) and (shared.claimed(index) or not shared.wanted(index)):
                index += 1
            if index == len(names):
                return
            shared.claim(index)
        name = names[index]
        try:
            result = work(name, shared.wanted(index))
        except Exception:
            result = None  # the task itself does it again, and reports it
        send(results, (name, result))
