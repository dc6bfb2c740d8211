"""One lock for a build's work, given up only while a thread waits for a model.

The task graph runs in doit's thread runner (``DOIT_CONFIG``), so that
sessions which ask a model wait for it at the same time: a build of 40 such
sessions takes about the time of the slowest few, not the sum. Everything
else stays one thing at a time, as in a serial build: every stage holds this
lock (``exclusive``) while it works, and the model's loop lets go of it only
around the request itself (``waiting``). Parsing, the store, the sandboxes
and code blocks never run side by side, and the GIL would gain nothing from
it anyway.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from domarkx.errors import DomarkxError

_lock = threading.Lock()
_state = threading.local()


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the build's lock (re-entrant within one thread)."""
    if getattr(_state, "held", False):
        yield
        return
    with _lock:
        _state.held = True
        try:
            yield
        finally:
            _state.held = False


@contextmanager
def waiting() -> Iterator[None]:
    """Let other tasks work while this thread waits (a no-op outside ``exclusive``)."""
    if not getattr(_state, "held", False):
        yield
        return
    _state.held = False
    _lock.release()
    try:
        yield
    finally:
        _lock.acquire()
        _state.held = True


# How many sessions may wait for a model at once: the threads of doit's runner.
DEFAULT_CONCURRENCY = 16
CONCURRENCY_ENV = "DOMARKX_LLM_CONCURRENCY"


def chosen() -> bool:
    """Whether the user set ``DOMARKX_LLM_CONCURRENCY`` (then it is used as it is)."""
    return bool(os.environ.get(CONCURRENCY_ENV, "").strip())


def concurrency() -> int:
    """``DOMARKX_LLM_CONCURRENCY`` (default 16): model requests a build has in flight at most.

    Servers rate-limit; ``1`` runs the build one task at a time.
    """
    raw = os.environ.get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DomarkxError(
            f"{CONCURRENCY_ENV}={raw!r} is not a whole number >= 1",
            hint=f"unset {CONCURRENCY_ENV} or give the number of model requests at once",
        )
    return value
