"""The doit actions of the five stages: each a thin task around ``stages``.

They are module-level functions with plain arguments, so ``doit -n 2 -P
process`` can pickle them. Each first takes what a worker of this build's
pool (``workers``) made of its session, when that was made from the input
the task sees now; else it does the stage's work itself (``stages.make_*``).

A user error (a broken document, a missing include, a failing code block)
becomes doit's ``TaskFailed`` with the one-line message of the
``DomarkxError``: doit reports it against the task and, with ``--continue``,
goes on with the other sessions.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

from doit.exceptions import TaskFailed

from domarkx import overlap
from domarkx.config.paths import setting_files
from domarkx.data.atomic import write_if_changed
from domarkx.data.layout import Layout
from domarkx.errors import DomarkxError
from domarkx.pipeline import workers
from domarkx.pipeline.params import CommandLineParams
from domarkx.pipeline.stages import (
    MACRO_MARK,
    Result,
    expand_output,
    expand_stamp,
    export_text,
    make_expand,
    make_parse,
    make_run,
    make_snapshot,
    parsed_digest,
    read,
    run_record,
    store_of,
    write_snapshot_out,
)
from domarkx.signals import die_with_parent

if TYPE_CHECKING:
    from domarkx.data.models import SessionInstance

P = ParamSpec("P")


def _stage(function: Callable[P, None]) -> Callable[P, Any]:
    """Report a ``DomarkxError`` as a task failure with its message, not a traceback."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        _tie_to_parent()
        try:
            with overlap.exclusive():  # one task at a time, but for model waits
                function(*args, **kwargs)
        except DomarkxError as err:
            return TaskFailed(str(err))
        except OSError as err:  # a read-only store, a full disk: one line, not a traceback
            where = f"{err.filename}: " if err.filename else ""
            return TaskFailed(f"{where}{err.strerror or err}")
        return None

    # doit reads every action's signature (for ``task``, ``targets``...) before
    # calling it; a ready one spares it unwrapping the function each time.
    wrapper.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return wrapper


# The process that last checked whether it is a worker of ``doit -P process``.
_tied_pid = 0


def _tie_to_parent() -> None:
    """In a worker of ``doit -n N -P process``: die when the build dies (SIGKILL).

    doit's workers wait for tasks forever; with the build gone they would be
    left parked. One check per process, on its first task.
    """
    global _tied_pid
    if _tied_pid == os.getpid():
        return
    _tied_pid = os.getpid()
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        die_with_parent(parent.pid)


def _from_worker(layout: Layout, name: str) -> Result | None:
    """What a worker did for ``name`` from its document as it is now (parse task)."""
    pool = workers.current(layout)
    if pool is None:
        return None
    result = pool.take(name)
    if not isinstance(result, Result) or result.stamp is None:
        return None
    try:
        now = os.stat(layout.abs(layout.source(name)))
    except OSError:
        return None
    if (now.st_mtime_ns, now.st_size) != result.stamp:
        return None
    if result.expanded is not None:
        pool.kept[name] = result  # for the session's later tasks
    return result


def _kept(layout: Layout, name: str, last: bool = False) -> Result | None:
    """The worker's result the parse task kept for ``name``'s later tasks."""
    pool = workers.current(layout)
    if pool is None:
        return None
    kept: Result | None = pool.kept.pop(name, None) if last else pool.kept.get(name)
    return kept


def _drop(layout: Layout, name: str) -> None:
    """A later task did not match the worker's result: the rest is the tasks' own."""
    pool = workers.current(layout)
    if pool is not None:
        pool.kept.pop(name, None)


# The tasks -------------------------------------------------------------------------
@_stage
def parse(layout: Layout, name: str) -> None:
    """``sessions/<name>.md`` -> ``cache/parse/<name>.json`` (a ``ParsedSession``)."""
    result = _from_worker(layout, name)
    if result is not None and not result.from_cache:
        return  # a worker of this build wrote it
    # The later tasks compare what the worker made with what this parse gives.
    make_parse(layout, name)


@_stage
def expand(layout: Layout, name: str, params: dict[str, str], task: Any) -> None:
    """Macros expanded; the files read on the way go to ``cache/deps/<name>.json``.

    The task generator reads the deps file on every load and lists those
    files as dependencies of this task, so editing an included file re-runs
    exactly the sessions that include it (directly or through another
    include). The same list replaces the old one in the running task's
    ``file_dep``, so that doit records it now and the next load, which reads
    it from the deps file, finds the task up to date. The parameter names the
    macros looked up go to ``cache/params/<name>.json`` the same way, and
    their values into the task's stamp.
    """
    lookup = CommandLineParams(params)
    data = read(layout, layout.parse_out(name))
    if MACRO_MARK not in data:
        result = _kept(layout, name)
        if result is not None and result.expanded == expand_output(data):
            # A worker of this build wrote this very output.
            if task is not None:
                task.file_dep = set(task.file_dep)
            return
        _drop(layout, name)
        output, included = make_expand(layout, data, lookup)
    else:
        # Its parse task ran and kept a worker's result, or did not run (an include
        # changed) and the worker's result is taken here.
        result = _kept(layout, name) or _from_worker(layout, name)
        if (
            result is not None
            and result.expanded is not None
            and result.included is not None
            and result.parsed == parsed_digest(data)
        ):
            # A worker expanded these very bytes, with no parameter (it looked up none).
            output, included = result.expanded, list(result.included)
        else:
            _drop(layout, name)
            output, included = make_expand(layout, data, lookup)
    asked = sorted(lookup.asked)
    if task is not None:
        previous = set(layout.read_deps(name))
        stamps = {p for p in task.file_dep if p.startswith(f"{layout.home}/cache/config/expand-")}
        # The values of the parameters it looked up, if any (see ``tasks``).
        stamp = {expand_stamp(layout, {p: lookup.get_value(p) for p in asked})} if asked else set()
        # A session that includes files depends on the configuration too (``tasks``).
        settings = set(setting_files(layout.root))
        kept = set(task.file_dep) - previous - stamps - settings
        task.file_dep = kept | set(included) | stamp | (settings if included else set())
    _write_list(layout.abs(layout.deps_file(name)), included)
    _write_list(layout.abs(layout.params_file(name)), asked)
    write_if_changed(layout.abs(layout.expand_out(name)), output)


def _write_list(path: str, items: list[str]) -> None:
    """A small JSON list file, or no file for an empty list."""
    if items:
        write_if_changed(path, json.dumps(items, indent=0) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@_stage
def snapshot(layout: Layout, name: str) -> None:
    """Store the snapshot (content-addressed), tag it ``<name>``, write its id."""
    data = read(layout, layout.expand_out(name))
    result = _kept(layout, name)
    if (
        result is not None
        and result.expanded == data
        and result.snapshot is not None
        and os.path.exists(store_of(layout).snapshot_path(result.snapshot))
    ):
        snapshot_id = result.snapshot  # a worker stored it from this very expansion
    else:
        _drop(layout, name)
        snapshot_id = make_snapshot(layout, data)
    write_snapshot_out(layout, name, snapshot_id)


@_stage
def run(layout: Layout, name: str, task: Any) -> None:
    """Run the snapshot, or reuse the execution cache; record the instance id.

    The replay records the run used go to ``cache/replay-deps/<name>.json``
    and into the running task's ``file_dep`` (as ``expand`` does with
    includes), so a new recording of one of them runs the session again.
    """
    snapshot_file = read(layout, layout.snapshot_out(name))
    snapshot_id = snapshot_file.decode().split("\n", 1)[0]
    result = _kept(layout, name)
    if (
        result is not None
        and result.snapshot is not None
        and result.run is not None
        and result.snapshot == snapshot_id
    ):
        _raise_for_checks(layout, name, result.run[0])
        _write_run(layout, name, task, *result.run)
        return
    _drop(layout, name)
    instance = make_run(layout, snapshot_id, name)
    assert instance is not None
    if instance.status == "failed":
        _failed(layout, name, instance)
    record = run_record(layout, snapshot_id, instance)
    _raise_for_checks(layout, name, record[0])
    _write_run(layout, name, task, *record)


def _raise_for_checks(layout: Layout, name: str, record: str) -> None:
    """A run whose checks failed fails its task, with no run record: the next build asks
    again (the execution cache answers, so nothing runs twice)."""
    if '"failed_checks"' not in record:
        return
    failed = json.loads(record).get("failed_checks") or []
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    source = layout.source(name)
    raise DomarkxError(
        f"{len(failed)} check{'s' * (len(failed) != 1)} failed: " + "; ".join(failed[:3]) + more,
        file=source,
        hint=f"`domarkx test {source}` names each check and its line",
    )


def _failed(layout: Layout, name: str, instance: SessionInstance) -> None:
    """Raise the error of a failed run, at the line of the block that failed."""
    # Finding lines in the source (the parser): only for a run that failed.
    from domarkx.session.locate import block_line, failed_block

    found_block = failed_block(instance.conversation)
    line = (
        block_line(Path(layout.abs(layout.source(name))), found_block[1]) if found_block else None
    )
    raise DomarkxError(
        f"the run failed: {instance.error}",
        file=layout.source(name),
        line=line,
        hint=f"`domarkx export {instance.instance_id[:12]}` shows every output",
    )


def _write_run(layout: Layout, name: str, task: Any, record: str, records: list[str]) -> None:
    write_if_changed(layout.abs(layout.run_out(name)), record)
    replay_deps = layout.abs(layout.replay_deps_file(name))
    if task is not None:
        previous = set(layout.read_deps(name, layout.replay_deps_file(name)))
        # A configuration file that is not there (yet) is no file doit can stat; listed in
        # the deps file, it joins ``file_dep`` once it exists, which runs the task again.
        task.file_dep = (set(task.file_dep) - previous) | {
            p for p in records if os.path.exists(layout.abs(p))
        }
    if records:
        write_if_changed(replay_deps, json.dumps(records) + "\n")
    elif os.path.exists(replay_deps):
        os.unlink(replay_deps)


@_stage
def export(layout: Layout, name: str) -> None:
    """``.domarkx/exports/<name>.md`` from the instance's conversation."""
    out = layout.abs(layout.export_out(name))
    result = _kept(layout, name, last=True)
    if (
        result is not None
        and result.run is not None
        and result.export is not None
        and read(layout, layout.run_out(name)) == result.run[0].encode()
    ):
        write_if_changed(out, result.export)
        return
    write_if_changed(out, export_text(layout, name))
