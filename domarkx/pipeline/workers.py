"""A build's run: the build lock, reaping what a killed run left, and the worker pool.

Two waits are worth taking off the build's one thread. A cold build (a new
project, a cleared cache) parses and snapshots many sessions, one task after
the other. An edit of one session in a fresh ``doit`` process first imports
markdown-it, the pydantic models, the store and jinja2 for a few ms of work,
while doit checks the thousands of tasks that are up to date. So when doit
loads the task list and it shows sessions whose parse cache is missing or
older than the document (``scan``, ``stale_sessions``), worker processes
start at once (``start_pool``): they run the ``prepare`` function they are
handed (the stages' imports), overlapping doit's loading and checking, and
then wait. Those imports take longer than the whole of a small project's
no-op build, so where the build daemon of this installation runs
(``daemon``), its workers, whose imports are done, are taken instead of
forked ones. What the pool's processes share is in ``pool_state``. Nothing is written before the run starts (``begin_run``, once
the build lock is held): only then do the workers learn which stages the
selection reaches, and take those sessions one by one in doit's order,
each through the ``work`` function they were handed. What a worker returns
goes to the task of that session (``Pool.take``), which checks that it was
made from the input the task sees now (see ``stages``), and does itself what
the worker did not.

Nothing here happens on import, nor when doit reads ``DOIT_CONFIG``: the
pool starts when doit generates the tasks, and the run when doit's reporter
says it starts (doit's one hook at the start and at the end of a run).

Workers are not started when this process has imported the stages' modules
already (``domarkx watch``, a second build in one process) unless the cold
build is big enough for more cores to pay. ``DOMARKX_PREBUILD=0`` turns the
workers off. Under ``doit -P process`` the tasks run in doit's own
processes, which stop the workers at their first task and do the work
themselves.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from domarkx import overlap, signals
from domarkx.data import lock
from domarkx.data.atomic import remove_orphans
from domarkx.data.layout import SHORT_NAME, Layout
from domarkx.pipeline import pool_state
from domarkx.pipeline.pool_state import DISMISSED, WAITING, Shared, Work, frames, work_loop
from domarkx.pipeline.selection import stages_wanted

# As many stale sessions as this make a cold build: one worker per core, and the
# build's own process takes sessions no worker has started on yet.
MIN_SESSIONS = 64
OFF_SWITCH = "DOMARKX_PREBUILD"
# Seconds an edit's task waits for a worker that has not started on its session
# (still importing on a busy machine) before it does the work itself.
PATIENCE = 5.0

# How a pool asks the build daemon for a worker (``daemon.hire``).
Hire = Callable[[Callable[[], None], Work, list[str], int, int, tuple[int, int, int]], Any]


def enabled() -> bool:
    """Whether workers may start (``DOMARKX_PREBUILD`` is not ``0``/``off``/``no``)."""
    return os.environ.get(OFF_SWITCH, "").strip().lower() not in ("0", "off", "no", "false")


class Scan(NamedTuple):
    """The sessions of a project as a build starts: every name, the odd ones, the stale ones.

    ``stale``: parse cache missing or older than the document; ``included``:
    the files each session included last time; ``reexpand``: sessions parsed
    since their last edit, but that include a file changed since their
    expansion (an edit of a shared include). A NamedTuple, as a frozen
    dataclass costs every build ~0.8 ms to make.
    """

    names: list[str]
    odd: set[str]
    stale: list[str]
    included: dict[str, list[str]]
    reexpand: list[str]

    def to_build(self) -> list[str]:
        """The sessions a worker may take on, in doit's order."""
        if not self.reexpand:
            return self.stale
        wanted = {*self.stale, *self.reexpand}
        return [name for name in self.names if name in wanted]


# What ``scan`` found, for the task list of the same load (``take_scan``).
_scans: dict[str, Scan] = {}
# The pool of each project's run in this process, by the store's absolute path.
_pools: dict[str, Pool] = {}
# The build locks this process took for runs (``begin_run``), to give back at their end.
_locks: list[str] = []


def scan(layout: Layout, remember: bool = True) -> Scan:
    """Walk the sessions once as doit reads its settings (starts nothing).

    ``remember``: keep it for the task list of the same load (``take_scan``).
    """
    names, odd = layout.session_entries()
    stale = stale_sessions(layout, [n for n in names if n not in odd])
    included = layout.included_files()
    reexpand = includes_changed(layout, included, set(stale) | odd) if included else []
    found = Scan(names, odd, stale, included, reexpand)
    if remember:
        _scans[layout.abs(layout.home)] = found
    return found


def take_scan(layout: Layout) -> Scan | None:
    """What ``scan`` found for this project in this load, if it ran (once)."""
    return _scans.pop(layout.abs(layout.home), None)


def includes_changed(layout: Layout, included: dict[str, list[str]], skip: set[str]) -> list[str]:
    """The sessions (but ``skip``) that include a file changed since their expansion."""
    changed: dict[str, int] = {}  # each included file's mtime, -1: gone (its task says so)
    found = []
    for name, files in included.items():
        if name in skip:
            continue
        try:
            expanded = os.stat(layout.abs(layout.expand_out(name))).st_mtime_ns
        except OSError:
            continue  # never expanded: its parse is stale, or it failed (its task says so)
        for path in files:
            if path not in changed:
                try:
                    changed[path] = os.stat(layout.abs(path)).st_mtime_ns
                except OSError:
                    changed[path] = -1
            if changed[path] > expanded:
                found.append(name)
                break
    return found


def stale_sessions(layout: Layout, names: Iterable[str]) -> list[str]:
    """The sessions whose parse cache is missing or older than their document.

    Every build pays this (two ``stat`` per session), so paths are put
    together by hand rather than through ``Layout``'s methods.
    """
    source_head, source_tail = layout.abs(layout.source("\0")).split("\0")
    cache_head, cache_tail = layout.abs(layout.parse_out("\0")).split("\0")
    stat = os.stat
    stale = []
    for name in names:
        try:
            changed = stat(source_head + name + source_tail).st_mtime_ns
        except OSError:
            continue  # its task reports it
        # A long name's cache file has a name cut to fit (``layout.cache_name``).
        cache = cache_head + name + cache_tail
        if len(name) > SHORT_NAME:
            cache = layout.abs(layout.parse_out(name))
        try:
            if stat(cache).st_mtime_ns >= changed:
                continue
        except OSError:
            pass
        stale.append(name)
    return stale


def start_pool(
    layout: Layout,
    stale: list[str],
    work: Work,
    prepare: Callable[[], None],
    prepared: bool,
) -> Pool | None:
    """While doit loads the tasks: start workers for the ``stale`` sessions, if they pay.

    ``work(name, stages)`` is what a worker does for one session, once the
    run starts; ``prepare()`` what it does before (its imports). ``prepared``:
    this process has done that already (then only a cold build gains).
    """
    home = layout.abs(layout.home)
    previous = _pools.pop(home, None)
    if previous is not None:
        previous.close()
    if not stale or not enabled() or (os.cpu_count() or 1) < 2:
        return None
    if not hasattr(os, "fork") or pool_state.worker_process:
        return None  # no fork here, or inside a worker of some other pool
    if threading.active_count() > 1:
        return None  # a fork copies only this thread: a lock another one holds stays held
    if prepared and len(stale) < MIN_SESSIONS:
        return None  # nothing a worker would do sooner than this process
    workers = 1 if len(stale) < MIN_SESSIONS else min(os.cpu_count() or 1, 8)
    # A fresh process gains most from a daemon's workers: their imports are done.
    hire = None
    if not prepared:
        # reason: the daemon's client (~0.3 ms), which a no-op build, starting no pool, skips
        from domarkx.pipeline import daemon

        hire = daemon.hire
    pool = _pools[home] = Pool(stale, work, prepare, workers, hire)
    return pool


def current(layout: Layout) -> Pool | None:
    """The workers of this project's run, for its tasks to take results from."""
    home = layout.abs(layout.home)
    found = _pools.get(home)
    if found is None:
        return None
    if found.owner != os.getpid():
        # A process of `doit -P process`: its results go to the process that
        # started the workers. Stop them; the tasks here do their own work.
        found.shared.threads = threading.Lock()  # as another thread may have left it
        found.abandon()
        del _pools[home]
        return None
    return found


# The run ------------------------------------------------------------------------
def begin_run(tasks: dict[str, Any], selected: Sequence[str], wait: bool = False) -> None:
    """The run starts: take the build lock, end what a killed run left, let the workers go.

    Raises ``BuildLockedError`` when another build holds the lock.
    """
    signals.install()  # a bare `doit` too: SIGTERM and SIGHUP clean up as Ctrl-C does
    layout = Layout.at()
    path = layout.lock_file
    lock.acquire(path, wait=wait)
    _locks.append(path)
    reap_if_killed(layout, lock.took_over(path))
    remove_old_build_caches(layout)
    pool = _pools.get(layout.abs(layout.home))
    if pool is not None and pool.owner == os.getpid():
        pool.start(stages_wanted(tasks, selected, pool.names))


def remove_old_build_caches(layout: Layout) -> None:
    """Remove the stage outputs another domarkx version left (under the build lock)."""
    old = layout.old_build_caches()
    if not old:
        return
    # reason: only after a new domarkx version (one listdir otherwise)
    import shutil

    for path in old:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def end_run() -> None:
    """The run is over: stop its workers (each finishes its session), give back the lock."""
    for pool in _pools.values():
        pool.close()
    _pools.clear()
    while _locks:
        lock.release(_locks.pop())


def reap_if_killed(layout: Layout, holder: str) -> None:
    """A build or run of this project was killed (SIGKILL): end what it left running.

    ``holder`` is what a build that died holding the lock left in it; a run
    that died leaves its pid in ``owners/``. Either costs one read here; a
    killed build also costs a walk of the store for its temporary files.
    """
    # Sessions' modules: a build imports them only when one was killed.
    from domarkx.session import owners

    home = layout.abs(layout.home)
    if holder:
        remove_orphans(home)  # the files it was writing when killed
    if not holder and not owners.dead(home):
        return
    # The instance runtime (pydantic models, engines): only to clean up.
    from domarkx.data.store import Store
    from domarkx.session.instance import InstanceManager  # (the same)

    reaped = InstanceManager(Store.of(layout)).reap()
    if reaped:
        why = f" ({holder})" if holder else ""
        print(
            f"domarkx: a killed build or run{why} left {len(reaped)} sandbox(es) or "
            "instance(s) behind; ended them",
            file=sys.stderr,
        )


# The pool -----------------------------------------------------------------------
class Handle:
    """One worker as the build sees it: its result pipe, and how it is reached."""

    __slots__ = ("fd", "gone", "link", "pid")

    def __init__(self, fd: int, pid: int = 0, link: Any = None) -> None:
        self.fd = fd  # the read end of its result pipe
        self.pid = pid  # forked by this process: its pid (killed, reaped here)
        self.link = link  # handed over by the daemon: the connection it watches
        self.gone = False  # its result pipe reached its end


class Pool:
    """Workers handed a work function; results taken by name, in doit's order.

    A worker comes from the build daemon when one of this installation runs
    (``hire``: its imports are done), else is forked from this process.
    """

    def __init__(
        self,
        names: list[str],
        work: Work,
        prepare: Callable[[], None],
        workers: int,
        hire: Hire | None = None,
    ) -> None:
        self.names = names
        self.work = work
        self.prepare = prepare
        self.owner = os.getpid()
        # A cold build's own process works too; an edit waits for its worker.
        self.steal = len(names) >= MIN_SESSIONS
        self.index = {name: i for i, name in enumerate(names)}
        self.results: dict[str, Any] = {}
        # What a task kept of a result for its session's later stages (see ``stages``).
        self.kept: dict[str, Any] = {}
        self.started = float("inf")  # when the run let the workers begin (``start``)
        self.arrived = threading.Condition()  # a result came in, or a worker is gone
        self.readers: list[threading.Thread] = []
        self.shared = Shared.create(len(names), workers)
        self.go_read, self.go_write = os.pipe()
        self.workers: list[Handle] = []
        for slot in range(workers):
            read_end, write_end = os.pipe()
            link = None
            if hire is not None:
                fds = (self.shared.fd, self.go_read, write_end)
                link = hire(prepare, work, names, slot, workers, fds)
            if link is not None:
                self.workers.append(Handle(read_end, link=link))
            else:
                hire = None  # no daemon answers: fork this one and the rest
                self.workers.append(Handle(read_end, pid=self._fork(slot, read_end, write_end)))
            os.close(write_end)

    def _fork(self, slot: int, read_end: int, write_end: int) -> int:
        """A worker forked from this process: prepare, wait for the run, work."""
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:
            pool_state.worker_process = True
            for fd in (read_end, self.go_write, *(h.fd for h in self.workers)):
                os.close(fd)
            signals.in_worker(self.owner)  # never outlive a killed build
            self.prepare()
            gc.enable()  # off while doit loaded the tasks (see tasks.doit_config)
            work_loop(self.shared, self.names, slot, self.work, self.go_read, write_end)
            status = 0
        finally:
            os._exit(status)

    def start(self, wanted: list[int]) -> None:
        """Let the workers begin, each session taken as far as ``wanted`` says."""
        for index, bits in enumerate(wanted):
            self.shared.want(index, bits)
            if not bits:
                self.index.pop(self.names[index], None)
        self.started = time.monotonic()
        self._let_go()

    def take(self, name: str) -> Any:
        """What a worker made of ``name`` (once); None when the caller must do it itself.

        A session no worker has started on is the caller's in a cold build (this
        process is one more worker); in an edit the caller waits (letting other
        tasks go on) for up to ``PATIENCE`` seconds rather than import everything.
        """
        index = self.index.pop(name, None)
        if index is None:
            return None
        self._start_readers()
        while True:
            with self.arrived:
                if name in self.results:
                    break
                with self.shared.locked():
                    if not self.shared.claimed(index) and (
                        self.steal
                        or self.started == float("inf")
                        or time.monotonic() - self.started > PATIENCE
                    ):
                        self.shared.claim(index)  # not started: the caller does it
                        return None
                if all(worker.gone for worker in self.workers):
                    return None  # every worker is gone (killed?): the caller does it
            with overlap.waiting(), self.arrived:  # the other tasks go on meanwhile
                if name not in self.results:
                    self.arrived.wait(timeout=0.5)
        return self.results.pop(name)

    def _let_go(self) -> None:
        """Close this process's ends of the start pipe: the workers read its end."""
        for fd in (self.go_write, self.go_read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.go_write = self.go_read = -1

    def _start_readers(self) -> None:
        """One thread per worker moves its results from its pipe to ``results``.

        Started by the first task that takes one (never in a process of ``doit
        -P process``, which forks after the run began), so that each waiting
        task wakes as soon as its own result is in.
        """
        if self.readers:
            return
        for worker in self.workers:
            reader = threading.Thread(target=self._read, args=(worker,), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, worker: Handle) -> None:
        try:
            for item in frames(worker.fd):
                with self.arrived:
                    self.results[item[0]] = item[1]
                    self.arrived.notify_all()
        finally:
            with self.arrived:
                worker.gone = True
                self.arrived.notify_all()

    def abandon(self) -> None:
        """Leave every session not yet started to the tasks."""
        with self.shared.locked():
            for index in range(len(self.names)):
                self.shared.claim(index)

    def close(self) -> None:
        """Let the workers finish the session they are on, and stop."""
        if self.owner != os.getpid():
            return  # a copy in a process of `doit -P process`: the owner stops them
        self.abandon()
        dismissed = []
        with self.shared.locked():
            for slot, worker in enumerate(self.workers):
                if self.shared.state(slot) == WAITING:
                    self.shared.set_state(slot, DISMISSED)
                    dismissed.append(worker)
        for worker in dismissed:
            # Still preparing, or waiting for a run that never came (`doit list`):
            # it has written nothing. A daemon's worker is prepared: it reads the
            # end of the start pipe, sees it is dismissed and goes.
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
        self._let_go()
        self._start_readers()
        for reader in self.readers:
            reader.join()  # a worker's pipe ends when it exits
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
            if worker.link is not None:
                worker.link.close()
            os.close(worker.fd)
        self.shared.close()
        self.workers = []
        self.readers = []
        self.index.clear()
        self.results.clear()
        self.kept.clear()
