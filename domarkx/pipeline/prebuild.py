"""Worker processes build sessions ahead of doit's tasks: a cold build, an edit.

Two waits are worth taking off the build's one thread. A cold build (a new
project, a cleared cache) parses and snapshots many sessions, one task after
the other. An edit of one session in a fresh ``doit`` process first imports
markdown-it, the pydantic models, the store and jinja2 (~250 ms) for ~30 ms
of work, while doit checks the thousands of tasks that are up to date. So
when doit loads the task list (``warm_up``) and it shows sessions whose
parse cache is missing or older than the document, worker processes start
at once: they import what the stages need, overlapping doit's loading and
checking, and then wait. Nothing is written before the run starts
(``begin``, from the reporter, once the build lock is held): only then do
the workers learn which stages the selection reaches, and take those
sessions one by one in doit's order. Each worker parses a session and
writes its parse cache; for a session without a macro it writes the expand
cache (its expansion is the parsed session itself), makes the snapshot,
and, when the execution cache answers for it (nothing to run), stores the
snapshot and the instance and renders the export.

Each task takes its session's result (``take_parse``, ``take_expand``,
``take_snapshot``, ``take_run``, ``take_export``) when it was made from the
input the task sees now, and writes what is left to write; anything the
workers did not do (a broken document, a session with macros, code to
run, a source changed since) the task does itself, as usual. The result is
the same as a build without workers, only sooner. A ``parse`` task of a
cold build does the work itself when no worker has started on its session
yet (the build's own process is one more worker); in an edit it waits
(letting the other tasks go on) rather than import everything itself.

Workers are not started when this process has imported the stages'
modules already (``domarkx watch``, a second build in one process) unless
the cold build is big enough for more cores to pay. ``DOMARKX_PREBUILD=0``
turns the workers off. Under ``doit -P process`` the tasks run in doit's own
processes, which stop the workers at their first task and do the work
themselves.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domarkx.data.layout import Layout

# As many stale sessions as this make a cold build: one worker per core, and the
# build's own process takes sessions no worker has started on yet.
MIN_SESSIONS = 64
OFF_SWITCH = "DOMARKX_PREBUILD"
# Seconds an edit's task waits for a worker that has not started on its session
# (still importing on a busy machine) before it does the work itself.
PATIENCE = 5.0

# The stages a worker may do for a session, as bits of its entry in ``Prebuild.wanted``.
PARSE, EXPAND, SNAPSHOT, RUN, EXPORT = 1, 2, 4, 8, 16
_STAGE_BITS = {"parse": PARSE, "expand": EXPAND, "snapshot": SNAPSHOT, "run": RUN, "export": EXPORT}

# What the stages import: a worker imports it before it waits for the run to start.
_STAGE_MODULES = (
    "domarkx.session.snapshot",
    "domarkx.session.instance",
    "domarkx.session.export",
    "domarkx.pipeline.run_cache",
)

# A worker's state (``Prebuild.state``): waiting for the run, working, told to go.
_WAITING, _WORKING, _DISMISSED = 0, 1, 2

# What ``close`` puts in the queue to end this process's reading of it.
_STOP = "stop"

_active: dict[str, Prebuild] = {}


def enabled() -> bool:
    """Whether workers may start (``DOMARKX_PREBUILD`` is not ``0``/``off``/``no``)."""
    return os.environ.get(OFF_SWITCH, "").strip().lower() not in ("0", "off", "no", "false")


@dataclass(frozen=True)
class Scan:
    """The sessions of a project as a build starts: every name, the odd ones, the stale ones."""

    names: list[str]
    odd: set[str]
    stale: list[str]


# What ``scan`` found, for the task list of the same load (``take_scan``).
_scans: dict[str, Scan] = {}


def scan(layout: Layout) -> Scan:
    """Walk the sessions once as doit reads its settings; start workers if some are stale."""
    names, odd = layout.session_entries()
    found = Scan(names, odd, stale_sessions(layout, [n for n in names if n not in odd]))
    _scans[layout.abs(layout.home)] = found
    warm_up(layout, found.stale)
    return found


def take_scan(layout: Layout) -> Scan | None:
    """What ``scan`` found for this project in this load, if it ran (once)."""
    return _scans.pop(layout.abs(layout.home), None)


def warm_up(layout: Layout, stale: list[str]) -> None:
    """While doit loads the tasks: start workers for the sessions whose parse caches are stale."""
    home = layout.abs(layout.home)
    previous = _active.pop(home, None)
    if previous is not None:
        previous.close()
    if not enabled() or (os.cpu_count() or 1) < 2:
        return
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return
    if multiprocessing.parent_process() is not None:
        return  # inside a worker process of some other pool
    import threading

    if threading.active_count() > 1:
        return  # a fork copies only this thread: a lock another one holds stays held
    loaded = all(module in sys.modules for module in _STAGE_MODULES)
    if not stale or (loaded and len(stale) < MIN_SESSIONS):
        return  # nothing to do, or nothing a worker would do sooner than this process
    workers = 1 if len(stale) < MIN_SESSIONS else min(os.cpu_count() or 1, 8)
    _active[home] = Prebuild(layout, stale, workers)


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
        try:
            if stat(cache_head + name + cache_tail).st_mtime_ns >= changed:
                continue
        except OSError:
            pass
        stale.append(name)
    return stale


def begin(tasks: dict[str, Any], selected: list[str], layout: Layout | None = None) -> None:
    """The run starts (the build lock is held): tell the workers what the selection reaches."""
    layout = layout or Layout.at()
    found = _active.get(layout.abs(layout.home))
    if found is None or found.owner != os.getpid():
        return
    if set(_STAGE_BITS) <= set(selected):  # a plain `doit`: every stage of every session
        found.start([sum(_STAGE_BITS.values())] * len(found.names))
        return
    from domarkx.pipeline.stages import reached_tasks

    reached = reached_tasks(tasks, selected)
    found.start(
        [
            sum(bit for stage, bit in _STAGE_BITS.items() if f"{stage}:{name}" in reached)
            if f"parse:{name}" in reached
            else 0
            for name in found.names
        ]
    )


def end() -> None:
    """Stop the workers of the run that ends (each finishes the session it is on)."""
    for found in _active.values():
        found.close()
    _active.clear()


def current(layout: Layout) -> Prebuild | None:
    """The workers of this project's run, for its tasks to take results from."""
    found = _active.get(layout.abs(layout.home))
    if found is None:
        return None
    if found.owner != os.getpid():
        # A process of `doit -P process`: its results go to the process that
        # started the workers. Stop them; the tasks here do their own work.
        found.abandon()
        del _active[layout.abs(layout.home)]
        return None
    return found


@dataclass(frozen=True)
class Result:
    """How far a worker took one session (None: a stage it left to the task)."""

    name: str
    stamp: tuple[int, int] | None  # the document's mtime and size when it was read
    expanded: bytes | None = None  # the expand cache it wrote
    snapshot: tuple[str, str] | None = None  # the snapshot's id and file, stored
    run: tuple[str, list[str]] | None = None  # the run cache file and its replay records
    export: str | None = None  # the export's text


def _one(layout: Layout, name: str, wanted: int) -> Result:
    """In a worker: take one session as far as ``wanted`` and the caches allow.

    The parse and expand caches are written here, as their stages write them;
    the snapshot and instance go into the store (content-addressed: the same
    content is the same file). The run cache and the export are left to
    their tasks, which check that they were made from their input.
    """
    from domarkx.data.atomic import write_if_changed
    from domarkx.pipeline import stages

    try:
        source = layout.abs(layout.source(name))
        before = os.stat(source)
        manager = stages._manager(layout)
        data = stages.write_parsed(layout, name, manager.parse(Path(source)))
        stamp = (before.st_mtime_ns, before.st_size)
        if not wanted & EXPAND or stages.MACRO_MARK in data:
            return Result(name, stamp)
        if os.path.exists(layout.abs(layout.deps_file(name))):
            return Result(name, stamp)  # its task drops the old includes from file_dep
        output = stages.expand_output(data)
        write_if_changed(layout.abs(layout.expand_out(name)), output)
        if not wanted & SNAPSHOT:
            return Result(name, stamp, output)
        expanded = stages._expanded_model().model_validate_json(output)
        built = manager.build(expanded.session)
        snapshot = (built.snapshot_id, built.to_json())
        if not wanted & RUN:
            return Result(name, stamp, output, snapshot)
        store = manager.store
        if not os.path.exists(store.snapshot_path(built.snapshot_id)):
            store.put_snapshot(built)
        from domarkx.pipeline.run_cache import cached_for_build
        from domarkx.session.instance import InstanceManager

        instance = cached_for_build(InstanceManager(store), built.snapshot_id, name)
        if instance is None or instance.status == "failed":
            return Result(name, stamp, output, snapshot)  # it runs: its task does that
        run = stages.run_record(layout, built.snapshot_id, instance)
        if not wanted & EXPORT:
            return Result(name, stamp, output, snapshot, run)
        return Result(name, stamp, output, snapshot, run, stages.instance_text(store, instance))
    except Exception:
        return Result(name, None)  # the task itself does it again, and reports it


def _worker(prebuild: Prebuild, slot: int, parent: int) -> None:
    """A worker: import the stages, wait for the run, then claim sessions nobody claimed."""
    import gc
    import importlib

    from domarkx.signals import in_worker

    in_worker(parent)  # never outlive a killed build (it would wait here forever)
    for module in _STAGE_MODULES:
        importlib.import_module(module)
    gc.enable()  # off while doit loaded the tasks (see tasks.doit_config)
    # The run starts when the build's process closes its end of this pipe (an
    # end of file wakes every worker; a killed one leaves nothing in a bad state).
    os.close(prebuild.go_write)
    os.read(prebuild.go_read, 1)
    jobs, claimed, lock, queue = prebuild.names, prebuild.claimed, prebuild.lock, prebuild.queue
    with lock:
        if prebuild.state[slot] == _DISMISSED:
            return
        prebuild.state[slot] = _WORKING
    index = 0
    while True:
        with lock:
            while index < len(jobs) and (claimed[index] or not prebuild.wanted[index]):
                index += 1
            if index == len(jobs):
                break
            claimed[index] = 1
        queue.put(_one(prebuild.layout, jobs[index], prebuild.wanted[index]))
    queue.put(None)


class Prebuild:
    """The workers of one project's run; its tasks take their results in doit's order."""

    def __init__(self, layout: Layout, names: list[str], workers: int) -> None:
        import multiprocessing

        self.layout = layout
        self.names = names
        self.owner = os.getpid()
        # A cold build's own process works too; an edit waits for its worker.
        self.steal = len(names) >= MIN_SESSIONS
        self.index = {name: i for i, name in enumerate(names)}
        self.results: dict[str, Result] = {}
        self.taken: dict[str, Result] = {}
        self.started = float("inf")  # when the run let the workers begin (``start``)
        self.arrived = threading.Condition()  # a result came in (see ``_read``)
        self.reader: threading.Thread | None = None
        context = multiprocessing.get_context("fork")
        self.lock = context.Lock()
        self.go_read, self.go_write = os.pipe()
        self.claimed = context.RawArray("b", len(names))
        self.wanted = context.RawArray("b", len(names))
        self.state = context.RawArray("b", workers)
        self.queue = context.Queue()
        self.workers: list[Any] = []
        for slot in range(workers):
            worker = context.Process(target=_worker, args=(self, slot, os.getpid()), daemon=True)
            worker.start()
            self.workers.append(worker)

    def start(self, wanted: list[int]) -> None:
        """Let the workers begin, each session taken as far as ``wanted`` says."""
        for index, bits in enumerate(wanted):
            self.wanted[index] = bits
            if not bits:
                self.index.pop(self.names[index], None)
        self.started = time.monotonic()
        self._let_go()

    def take_parse(self, name: str) -> bool:
        """Whether a worker wrote ``name``'s parse cache from the source as it is now."""
        index = self.index.pop(name, None)
        if index is None:
            return False
        from domarkx import overlap

        self._start_reader()
        while True:
            with self.arrived:
                if name in self.results:
                    break
                with self.lock:
                    if not self.claimed[index] and (
                        self.steal
                        or self.started == float("inf")
                        or time.monotonic() - self.started > PATIENCE
                    ):
                        self.claimed[index] = 1  # not started: the task does it
                        return False
                if not any(worker.is_alive() for worker in self.workers):
                    return False  # every worker is gone (killed?): the task does it
            with overlap.waiting(), self.arrived:  # the other tasks go on meanwhile
                if name not in self.results:
                    self.arrived.wait(timeout=0.5)
        result = self.results.pop(name)
        if result.stamp is None:
            return False
        try:
            now = os.stat(self.layout.abs(self.layout.source(name)))
        except OSError:
            return False
        if (now.st_mtime_ns, now.st_size) != result.stamp:
            return False
        if result.expanded is not None:
            self.taken[name] = result
        return True

    def _let_go(self) -> None:
        """Close this process's ends of the start pipe: the workers read its end."""
        for fd in (self.go_write, self.go_read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.go_write = self.go_read = -1

    def _start_reader(self) -> None:
        """One thread of this process moves the workers' results from the queue to ``results``.

        Started by the first task that takes one (never in a process of ``doit
        -P process``, which forks after the run began), so that each waiting
        task wakes as soon as its own result is in.
        """
        if self.reader is not None:
            return
        self.reader = threading.Thread(target=self._read, name="prebuild-results", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            item = self.queue.get()
            if item == _STOP:
                return
            if item is not None:
                with self.arrived:
                    self.results[item.name] = item
                    self.arrived.notify_all()

    def take_expand(self, name: str, output: bytes) -> bool:
        """Whether a worker wrote this expand cache (and removed the deps file)."""
        result = self.taken.get(name)
        if result is None or result.expanded != output:
            self.taken.pop(name, None)
            return False
        return True

    def take_snapshot(self, name: str, expanded: bytes) -> tuple[str, str] | None:
        """The snapshot id and file a worker made from this expand cache, if it did."""
        result = self.taken.get(name)
        if result is None or result.expanded != expanded or result.snapshot is None:
            self.taken.pop(name, None)
            return None
        return result.snapshot

    def take_run(self, name: str, snapshot_file: bytes) -> tuple[str, list[str]] | None:
        """The run cache file a worker made for the snapshot this file names, if it did."""
        result = self.taken.get(name)
        if result is None or result.snapshot is None or result.run is None:
            self.taken.pop(name, None)
            return None
        if snapshot_file.split(b"\n", 1)[0].decode() != result.snapshot[0]:
            self.taken.pop(name, None)
            return None
        return result.run

    def take_export(self, name: str, run_file: bytes) -> str | None:
        """The export a worker rendered from this very run cache file, if it did."""
        result = self.taken.pop(name, None)
        if result is None or result.run is None or result.export is None:
            return None
        if run_file != result.run[0].encode():
            return None
        return result.export

    def abandon(self) -> None:
        """Leave every session not yet started to the tasks."""
        with self.lock:
            for index in range(len(self.names)):
                self.claimed[index] = 1

    def close(self) -> None:
        """Let the workers finish the session they are on, and stop."""
        import queue

        if self.owner != os.getpid():
            return  # a copy in a process of `doit -P process`: the owner stops them
        self.abandon()
        dismissed = []
        with self.lock:
            for slot in range(len(self.workers)):
                if self.state[slot] == _WAITING:
                    self.state[slot] = _DISMISSED
                    dismissed.append(self.workers[slot])
        for worker in dismissed:
            # Still importing, or waiting for a run that never came (`doit list`):
            # it has written nothing.
            worker.kill()
        self._let_go()
        if self.reader is not None:
            self.queue.put(_STOP)
            self.reader.join()
        for worker in self.workers:
            while worker.is_alive():
                # A worker exits once what it put is read.
                with contextlib.suppress(queue.Empty):
                    self.queue.get(timeout=0.05)
                worker.join(0.01)
        self.workers = []
        self.index.clear()
        self.results.clear()
        self.taken.clear()
