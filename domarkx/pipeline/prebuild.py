"""Cold builds: worker processes parse, expand and snapshot sessions ahead of doit's tasks.

A cold build (a new project, a cleared cache) parses and snapshots many
sessions, one task after the other. When a run starts (``begin``, from the
reporter, in the main thread before doit starts any task or thread) and the
selection reaches at least ``MIN_SESSIONS`` ``parse`` tasks without a parse
cache, worker processes take those sessions one by one: they parse them,
write their parse caches and, when the selection goes that far, expand and
make the snapshot of each one without a macro (its expansion is the parsed
session itself), in the order doit runs the tasks.

A ``parse`` task takes its session's result (``take_parse``), or does the
work itself when no worker has started on it yet; ``expand`` keeps the cache
a worker wrote when it is the same output; ``snapshot`` stores the snapshot a
worker made when the expand cache is the one it was made from. Anything the
workers did not do (a broken document, a session with macros, a source
changed since) the task does itself, as usual: the result is the same as a
build without workers, only sooner.

``DOMARKX_PREBUILD=0`` turns the workers off. Under ``doit -P process`` the
tasks run in doit's own processes, which stop the workers at their first
task and do the work themselves.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from domarkx.pipeline.layout import Layout

MIN_SESSIONS = 64
OFF_SWITCH = "DOMARKX_PREBUILD"
# A no-op build stats one parse cache in SAMPLE_EVERY before deciding that there
# is nothing to prebuild (MIN_SESSIONS missing ones show in the sample).
SAMPLE_EVERY = 16

_active: dict[str, Prebuild] = {}


def enabled() -> bool:
    """Whether workers may start (``DOMARKX_PREBUILD`` is not ``0``/``off``/``no``)."""
    return os.environ.get(OFF_SWITCH, "").strip().lower() not in ("0", "off", "no", "false")


def begin(tasks: dict[str, Any], selected: list[str], layout: Layout | None = None) -> None:
    """Start the workers for a run of ``tasks`` when it is a cold build of many sessions."""
    end()
    if not enabled() or (os.cpu_count() or 1) < 2:
        return
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return
    if multiprocessing.parent_process() is not None:
        return  # inside a worker process of some other pool
    layout = layout or Layout.at()
    exists = os.path.exists
    parse_tasks = [name for name in tasks if name.startswith("parse:")]
    sample = parse_tasks[::SAMPLE_EVERY]
    missing = sum(not exists(layout.abs(layout.parse_out(name[6:]))) for name in sample)
    if missing * SAMPLE_EVERY < MIN_SESSIONS:
        return
    from domarkx.pipeline.stages import reached_tasks

    reached = reached_tasks(tasks, selected)
    jobs = [
        (
            name,
            "p" + "e" * (f"expand:{name}" in reached) + "s" * (f"snapshot:{name}" in reached),
        )
        for name in (task[len("parse:") :] for task in parse_tasks if task in reached)
        if not exists(layout.abs(layout.parse_out(name)))
    ]
    if len(jobs) >= MIN_SESSIONS:
        _active[layout.abs(layout.home)] = Prebuild(layout, jobs)


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


def _one(layout: Layout, name: str, stages_wanted: str) -> tuple[str, Any, Any, Any]:
    """In a worker: parse a session and, without a macro, expand it and make its snapshot.

    ``stages_wanted`` says how far the run goes: ``"p"``, ``"pe"`` or ``"pes"``.
    The parse and expand caches are written here, as their stages write them;
    the snapshot goes back to the ``snapshot`` task, which stores it.
    """
    from domarkx.data.atomic import write_if_changed
    from domarkx.pipeline import stages

    try:
        source = layout.abs(layout.source(name))
        before = os.stat(source)
        parsed = stages._manager(layout).parse(Path(source))
        data = parsed.model_dump_json().encode("utf-8")
        write_if_changed(layout.abs(layout.parse_out(name)), data)
        stamp = (before.st_mtime_ns, before.st_size)
        if "e" not in stages_wanted or stages.MACRO_MARK in data:
            return name, stamp, None, None
        if os.path.exists(layout.abs(layout.deps_file(name))):
            return name, stamp, None, None  # its task drops the old includes from file_dep
        output = stages.expand_output(data)
        write_if_changed(layout.abs(layout.expand_out(name)), output)
        if "s" not in stages_wanted:
            return name, stamp, output, None
        expanded = stages._expanded_model().model_validate_json(output)
        built = stages._manager(layout).build(expanded.session)
        return name, stamp, output, (built.snapshot_id, built.to_json())
    except Exception:
        return name, None, None, None  # the task itself does it again, and reports it


def _worker(prebuild: Prebuild, parent: int) -> None:
    """A worker's loop: claim the next session nobody has claimed, until none is left."""
    from domarkx.cli.signals import in_worker

    in_worker(parent)  # never outlive a killed build (it would wait here forever)
    jobs, claimed, lock, queue = prebuild.jobs, prebuild.claimed, prebuild.lock, prebuild.queue
    index = 0
    while True:
        with lock:
            while index < len(jobs) and claimed[index]:
                index += 1
            if index == len(jobs):
                break
            claimed[index] = 1
        queue.put(_one(prebuild.layout, *jobs[index]))
    queue.put(None)


class Prebuild:
    """The workers of one project's run; its tasks take their results in doit's order."""

    def __init__(self, layout: Layout, jobs: list[tuple[str, str]]) -> None:
        import multiprocessing

        self.layout = layout
        self.jobs = jobs
        self.owner = os.getpid()
        self.index = {name: i for i, (name, _) in enumerate(self.jobs)}
        self.results: dict[str, tuple[Any, Any, Any]] = {}
        self.expanded: dict[str, bytes] = {}
        self.snapshots: dict[str, tuple[bytes, str, str]] = {}
        context = multiprocessing.get_context("fork")
        self.lock = context.Lock()
        self.claimed = context.RawArray("b", len(self.jobs))
        self.queue = context.Queue()
        self.workers: list[Any] = []
        for _ in range(min(os.cpu_count() or 1, 8)):
            worker = context.Process(target=_worker, args=(self, os.getpid()), daemon=True)
            worker.start()
            self.workers.append(worker)

    def take_parse(self, name: str) -> bool:
        """Whether a worker wrote ``name``'s parse cache from the source as it is now."""
        index = self.index.pop(name, None)
        if index is None:
            return False
        import queue

        while name not in self.results:
            with self.lock:
                if not self.claimed[index]:
                    self.claimed[index] = 1  # not started: the task does it
                    return False
            try:
                item = self.queue.get(timeout=1)
            except queue.Empty:
                if not any(worker.is_alive() for worker in self.workers):
                    return False
                continue
            if item is not None:
                self.results[item[0]] = item[1:]
        stamp, expanded, snapshot = self.results.pop(name)
        if stamp is None:
            return False
        try:
            now = os.stat(self.layout.abs(self.layout.source(name)))
        except OSError:
            return False
        if (now.st_mtime_ns, now.st_size) != stamp:
            return False
        if expanded is not None:
            self.expanded[name] = expanded
            if snapshot is not None:
                self.snapshots[name] = (expanded, *snapshot)
        return True

    def take_expand(self, name: str, output: bytes) -> bool:
        """Whether a worker wrote this expand cache (and removed the deps file)."""
        return self.expanded.pop(name, None) == output

    def take_snapshot(self, name: str, expanded: bytes) -> tuple[str, str] | None:
        """The snapshot id and file a worker made from this expand cache, if it did."""
        found = self.snapshots.pop(name, None)
        if found is None or found[0] != expanded:
            return None
        return found[1], found[2]

    def abandon(self) -> None:
        """Leave every session not yet started to the tasks."""
        with self.lock:
            for index in range(len(self.jobs)):
                self.claimed[index] = 1

    def close(self) -> None:
        """Let the workers finish the session they are on, and stop."""
        import queue

        if self.owner != os.getpid():
            return  # a copy in a process of `doit -P process`: the owner stops them
        self.abandon()
        for worker in self.workers:
            while worker.is_alive():
                # A worker exits once what it put is read.
                with contextlib.suppress(queue.Empty):
                    self.queue.get(timeout=0.05)
                worker.join(0.01)
        self.workers = []
        self.index.clear()
        self.results.clear()
        self.expanded.clear()
        self.snapshots.clear()
