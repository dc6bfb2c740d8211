"""SIGTERM and SIGHUP end a command the way Ctrl-C does.

CI cancels a job with SIGTERM, a closed terminal sends SIGHUP; Python's
default for both is to die on the spot, with sandboxes left up and
instances left ``running``. Here both raise ``Terminated``, a
``KeyboardInterrupt``, so that every ``finally`` and ``except
BaseException`` that cleans up after Ctrl-C (a run destroys its sandbox and
marks its instance ``failed``; a build saves doit's state and lets go of
its lock) does the same for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process was asked to end by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    # Once: cleaning up must not be cut short by the same signal sent twice.
    for handled in HANDLED:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(handled, signal.SIG_IGN)
    raise Terminated(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into ``Terminated`` (main thread, default handlers only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _raise)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process ended by it (Ctrl-C: 130)."""
    return interrupt.exit_status if isinstance(interrupt, Terminated) else 130


def in_worker(parent: int) -> None:
    """In a forked worker: die with the parent, and leave Ctrl-C to the parent."""
    for signum in HANDLED:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux).

    However the parent dies, no worker outlives it. SIGKILL, not a signal the
    worker could handle: a worker that exits normally joins its queue's feeder
    thread, which can wait forever on a pipe nobody reads any more. A
    temporary file it leaves carries its pid, and the next build removes it
    (``domarkx.data.atomic.remove_orphans``).
    """
    import ctypes  # ~3 ms, for worker processes only

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
