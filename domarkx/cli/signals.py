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
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds (a write in progress removes its temporary file) and ends a
    # worker process without the traceback a KeyboardInterrupt would print.
    raise SystemExit(128 + signum)


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when ``parent`` dies (Linux).

    However the parent dies (SIGKILL included), no worker outlives it, and a
    worker cut short while writing a file leaves no temporary file behind:
    SIGTERM here unwinds the worker as ``SystemExit``.
    """
    import ctypes
    import os

    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
