"""The work of each pipeline stage: plain module-level functions that doit calls.

Each stage reads the previous stage's cache file and writes its own, always
atomically, and only when the content changed (so doit's checks downstream
see an unchanged file and stop there). They are module-level functions with
plain arguments, so ``doit -n 2 -P process`` can pickle them. Heavy imports
(markdown-it, pydantic models, jinja2, engines) happen here, when a stage
runs, never when doit loads the task list.

Each stage's output carries the domarkx version (the expand cache, the
snapshot id file, the run record), so that a new version, which re-runs
``parse`` and ``expand`` through their stamp files, re-runs every later
stage too without each of them listing the stamp: one ``stat`` less per
task in every no-op build.

A user error (a broken document, a missing include, a failing code block)
becomes doit's ``TaskFailed`` with the one-line message of the
``DomarkxError``: doit reports it against the task and, with ``--continue``,
goes on with the other sessions.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

from domarkx import __version__, overlap
from domarkx.data.atomic import write_atomic, write_if_changed
from domarkx.data.digest import digest
from domarkx.data.layout import Layout
from domarkx.errors import DomarkxError
from domarkx.pipeline import model_sessions, prebuild

if TYPE_CHECKING:
    from domarkx.data.models import SessionInstance
    from domarkx.data.store import Store
    from domarkx.parsing.markdown import ParsedSession
    from domarkx.session.snapshot import SnapshotManager

P = ParamSpec("P")

# Every macro is a link to ``domarkx://...`` (``parsing.macros``); text without
# this mark has nothing to expand.
MACRO_MARK = b"domarkx://"

# What the caches were made by: the domarkx version, and the layout of the
# cache files (bumped whenever a stage's output changes shape).
CACHE_FORMAT = 2
BUILD_VERSION = f"{__version__} cache-{CACHE_FORMAT}"
_VERSION_JSON = json.dumps(BUILD_VERSION).encode()


def _stage(function: Callable[P, None]) -> Callable[P, Any]:
    """Report a ``DomarkxError`` as a task failure with its message, not a traceback."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        from doit.exceptions import TaskFailed

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
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        from domarkx.signals import die_with_parent

        die_with_parent(parent.pid)


def _read(layout: Layout, path: str) -> bytes:
    with open(layout.abs(path), "rb") as handle:
        return handle.read()


def _store(layout: Layout) -> Store:
    from domarkx.data.store import Store

    return Store(Path(layout.abs(layout.home)), Path(layout.root))


def _manager(layout: Layout) -> SnapshotManager:
    from domarkx.session.snapshot import SnapshotManager

    return SnapshotManager(_store(layout))


def _expanded_model() -> Any:  # a pydantic model class built on first use
    """``{"domarkx": version, "included": [...], "session": ParsedSession}``: expand's cache."""
    global _Expanded
    if _Expanded is None:
        from pydantic import BaseModel

        # Imported here, not only for type checking: pydantic resolves the annotation.
        from domarkx.parsing.markdown import ParsedSession  # noqa: F401

        class Expanded(BaseModel):
            domarkx: str
            included: list[str]
            session: ParsedSession

        _Expanded = Expanded
    return _Expanded


_Expanded: Any = None


@_stage
def parse(layout: Layout, name: str) -> None:
    """``sessions/<name>.md`` -> ``cache/parse/<name>.json`` (a ``ParsedSession``)."""
    found = prebuild.current(layout)
    if found is not None and found.take_parse(name):
        return  # a worker of this cold build wrote it (see prebuild.py)
    write_parsed(layout, name, _manager(layout).parse(Path(layout.abs(layout.source(name)))))


def write_parsed(layout: Layout, name: str, parsed: ParsedSession) -> bytes:
    """Write a session's parse cache (and its model mark); its bytes, for the next stage."""
    data = parsed.model_dump_json().encode("utf-8")
    write_if_changed(layout.abs(layout.parse_out(name)), data)
    model_sessions.note(layout, name, parsed.execution_config)
    return data


def expand_output(parsed: bytes) -> bytes:
    """The expand cache of a parsed session without a macro: the session as it is."""
    return b'{"domarkx":%s,"included":[],"session":%s}' % (_VERSION_JSON, parsed)


def reached_tasks(tasks: dict[str, Any], selected: list[str]) -> set[str]:
    """The names of the tasks a doit selection reaches (through task_dep and setup)."""
    reached: set[str] = set()
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name in reached or name not in tasks:
            continue
        reached.add(name)
        stack.extend(tasks[name].task_dep)
        stack.extend(tasks[name].setup_tasks)
    return reached


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
    from domarkx.pipeline.loader import CommandLineParams

    lookup = CommandLineParams(params)
    data = _read(layout, layout.parse_out(name))
    if MACRO_MARK not in data:
        # Without a macro, expansion gives back the session unchanged: skip the
        # validation, deep copy and serialisation (most of this stage's cost).
        included: list[str] = []
        output: str | bytes = expand_output(data)
        found = prebuild.current(layout)
        if found is not None and found.take_expand(name, expand_output(data)):
            # A worker of this cold build wrote this very output.
            if task is not None:
                task.file_dep = set(task.file_dep)
            return
    else:
        from domarkx.parsing.markdown import ParsedSession

        parsed = ParsedSession.model_validate_json(data)
        expanded, included = _manager(layout).expand(parsed, lookup)
        model = _expanded_model()
        output = model(domarkx=BUILD_VERSION, included=included, session=expanded).model_dump_json()
    asked = sorted(lookup.asked)
    if task is not None:
        from domarkx.pipeline.tasks import expand_stamp

        previous = set(layout.read_deps(name))
        stamps = {p for p in task.file_dep if p.startswith(f"{layout.home}/cache/config/expand-")}
        stamp = expand_stamp(layout, {p: lookup.get_value(p) for p in asked})
        task.file_dep = (set(task.file_dep) - previous - stamps) | set(included) | {stamp}
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
    data = _read(layout, layout.expand_out(name))
    store = _store(layout)
    found = prebuild.current(layout)
    prebuilt = found.take_snapshot(name, data) if found is not None else None
    if prebuilt is not None:
        snapshot_id, text = prebuilt
        path = store.snapshot_path(snapshot_id)
        # Same content, same id: an existing snapshot file stays as first written.
        if not os.path.exists(path):
            write_atomic(path, text)
    else:
        expanded = _expanded_model().model_validate_json(data)
        manager = _manager(layout)
        built = manager.build(expanded.session)
        snapshot_id = built.snapshot_id
        if not os.path.exists(store.snapshot_path(snapshot_id)):
            store.put_snapshot(built)
    from domarkx.data.store import valid_tag

    if valid_tag(name) and _tagged(store, name) != snapshot_id:
        store.tag(name, snapshot_id)
    write_if_changed(layout.abs(layout.snapshot_out(name)), f"{snapshot_id}\n{BUILD_VERSION}\n")


def _tagged(store: Any, name: str) -> str | None:
    """The snapshot id tag ``name`` points at (without listing every tag)."""
    try:
        return str(store._tag_path(name).read_text(encoding="utf-8")).strip()
    except OSError:
        return None


@_stage
def run(layout: Layout, name: str, task: Any) -> None:
    """Run the snapshot, or reuse the execution cache; record the instance id.

    The replay records the run used go to ``cache/replay-deps/<name>.json``
    and into the running task's ``file_dep`` (as ``expand`` does with
    includes), so a new recording of one of them runs the session again.
    """
    snapshot_file = _read(layout, layout.snapshot_out(name))
    found = prebuild.current(layout)
    prebuilt = found.take_run(name, snapshot_file) if found is not None else None
    if prebuilt is not None:
        _write_run(layout, name, task, *prebuilt)
        return
    from domarkx.pipeline.run_cache import run_for_build
    from domarkx.session.instance import InstanceManager

    snapshot_id = snapshot_file.decode().split("\n", 1)[0]
    instance = run_for_build(InstanceManager(_store(layout)), snapshot_id, name)
    if instance.status == "failed":
        from pathlib import Path

        from domarkx.session.locate import block_line, failed_block

        found_block = failed_block(instance.conversation)
        line = (
            block_line(Path(layout.abs(layout.source(name))), found_block[1])
            if found_block
            else None
        )
        raise DomarkxError(
            f"the run failed: {instance.error}",
            file=layout.source(name),
            line=line,
            hint=f"`domarkx export {instance.instance_id[:12]}` shows every output",
        )
    _write_run(layout, name, task, *run_record(layout, snapshot_id, instance))


def run_record(
    layout: Layout, snapshot_id: str, instance: SessionInstance
) -> tuple[str, list[str]]:
    """The run cache file of a finished instance, and the replay records its run used."""
    record = {
        "domarkx": BUILD_VERSION,
        "snapshot_id": snapshot_id,
        "instance_id": instance.instance_id,
        "status": instance.status,
        "llm_records": instance.llm_records,
        # What the export renders: a new reply or output re-exports, the same one does not.
        "conversation": digest(
            [
                m.model_dump(mode="json", exclude={"content": {"__all__": {"duration"}}})
                for m in instance.conversation
            ]
        ),
    }
    records = sorted({layout.replay_record(key) for key in instance.llm_records})
    return json.dumps(record, indent=1) + "\n", records


def _write_run(layout: Layout, name: str, task: Any, record: str, records: list[str]) -> None:
    write_if_changed(layout.abs(layout.run_out(name)), record)
    replay_deps = layout.abs(layout.replay_deps_file(name))
    if task is not None:
        previous = set(layout.read_deps(name, layout.replay_deps_file(name)))
        task.file_dep = (set(task.file_dep) - previous) | set(records)
    if records:
        write_if_changed(replay_deps, json.dumps(records) + "\n")
    elif os.path.exists(replay_deps):
        os.unlink(replay_deps)


def export_text(layout: Layout, name: str) -> str:
    """The Markdown the export stage writes for ``name`` (also what ``--check`` expects)."""
    from domarkx.errors import RefError

    record = json.loads(_read(layout, layout.run_out(name)))
    store = _store(layout)
    try:
        instance = store.get_instance(record["instance_id"])
    except RefError:
        # Pruned since the run: the execution cache brings it back without running.
        from domarkx.pipeline.run_cache import run_for_build
        from domarkx.session.instance import InstanceManager

        instance = run_for_build(InstanceManager(store), record["snapshot_id"], name)
    return instance_text(store, instance)


def instance_text(store: Store, instance: SessionInstance) -> str:
    """An instance exported as Markdown, with its snapshot's preamble and template."""
    from domarkx.session.export import render

    snapshot = store.get_snapshot(instance.snapshot_id)
    return render(snapshot, instance.conversation, instance=instance)


@_stage
def export(layout: Layout, name: str) -> None:
    """``.domarkx/exports/<name>.md`` from the instance's conversation."""
    out = layout.abs(layout.export_out(name))
    found = prebuild.current(layout)
    prebuilt = found.take_export(name, _read(layout, layout.run_out(name))) if found else None
    write_if_changed(out, prebuilt if prebuilt is not None else export_text(layout, name))
