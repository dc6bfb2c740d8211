"""The work of each pipeline stage: plain module-level functions that doit calls.

Each stage reads the previous stage's cache file and writes its own, always
atomically, and only when the content changed (so doit's checks downstream
see an unchanged file and stop there). They are module-level functions with
plain arguments, so ``doit -n 2 -P process`` can pickle them. Heavy imports
(mistletoe, pydantic models, jinja2, engines) happen here, when a stage
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
import json
import os
from functools import wraps
from typing import Any

from domarkx import __version__
from domarkx.data.atomic import write_if_changed
from domarkx.errors import DomarkxError
from domarkx.pipeline.layout import Layout

# Every macro is a link to ``domarkx://...`` (``parsing.macros``); text without
# this mark has nothing to expand.
MACRO_MARK = b"domarkx://"

# What the caches were made by: the domarkx version, and the layout of the
# cache files (bumped whenever a stage's output changes shape).
CACHE_FORMAT = 2
BUILD_VERSION = f"{__version__} cache-{CACHE_FORMAT}"
_VERSION_JSON = json.dumps(BUILD_VERSION).encode()


def _stage(function):
    """Report a ``DomarkxError`` as a task failure with its message, not a traceback."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any):
        from doit.exceptions import TaskFailed

        try:
            function(*args, **kwargs)
        except DomarkxError as err:
            return TaskFailed(str(err))
        return None

    return wrapper


def _read(layout: Layout, path: str) -> bytes:
    with open(layout.abs(path), "rb") as handle:
        return handle.read()


def _store(layout: Layout):
    from domarkx.data.store import Store

    return Store(layout.abs(layout.home), layout.root)


def _manager(layout: Layout):
    from domarkx.session.snapshot import SnapshotManager

    return SnapshotManager(_store(layout))


def _expanded_model():
    """``{"domarkx": version, "included": [...], "session": ParsedSession}``: expand's cache."""
    global _Expanded
    if _Expanded is None:
        from pydantic import BaseModel

        from domarkx.parsing.markdown import ParsedSession

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
    parsed = _manager(layout).parse(layout.abs(layout.source(name)))
    write_if_changed(layout.abs(layout.parse_out(name)), parsed.model_dump_json())


@_stage
def expand(layout: Layout, name: str, params: dict[str, str], task: Any) -> None:
    """Macros expanded; the files read on the way go to ``cache/deps/<name>.json``.

    The task generator reads the deps file on every load and lists those
    files as dependencies of this task, so editing an included file re-runs
    exactly the sessions that include it (directly or through another
    include). The same list replaces the old one in the running task's
    ``file_dep``, so that doit records it now and the next load, which reads
    it from the deps file, finds the task up to date.
    """
    data = _read(layout, layout.parse_out(name))
    if MACRO_MARK not in data:
        # Without a macro, expansion gives back the session unchanged: skip the
        # validation, deep copy and serialisation (most of this stage's cost).
        included: list[str] = []
        output = b'{"domarkx":%s,"included":[],"session":%s}' % (_VERSION_JSON, data)
    else:
        from domarkx.parsing.markdown import ParsedSession

        parsed = ParsedSession.model_validate_json(data)
        expanded, included = _manager(layout).expand(parsed, params)
        model = _expanded_model()
        output = model(domarkx=BUILD_VERSION, included=included, session=expanded).model_dump_json()
    if task is not None:
        previous = set(layout.read_deps(name))
        task.file_dep = (set(task.file_dep) - previous) | set(included)
    deps = layout.abs(layout.deps_file(name))
    if included:
        write_if_changed(deps, json.dumps(included, indent=0) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(deps)
    write_if_changed(layout.abs(layout.expand_out(name)), output)


@_stage
def snapshot(layout: Layout, name: str) -> None:
    """Store the snapshot (content-addressed), tag it ``<name>``, write its id."""
    expanded = _expanded_model().model_validate_json(_read(layout, layout.expand_out(name)))
    manager = _manager(layout)
    built = manager.build(expanded.session)
    store = manager.store
    # Same content, same id: an existing snapshot file stays as first written.
    if not os.path.exists(store.snapshot_path(built.snapshot_id)):
        store.put_snapshot(built)
    if not any(c.isspace() for c in name) and _tagged(store, name) != built.snapshot_id:
        store.tag(name, built.snapshot_id)
    write_if_changed(
        layout.abs(layout.snapshot_out(name)), f"{built.snapshot_id}\n{BUILD_VERSION}\n"
    )


def _tagged(store: Any, name: str) -> str | None:
    """The snapshot id tag ``name`` points at (without listing every tag)."""
    try:
        return store._tag_path(name).read_text(encoding="utf-8").strip()
    except OSError:
        return None


@_stage
def run(layout: Layout, name: str) -> None:
    """Run the snapshot, or reuse the execution cache; record the instance id."""
    from domarkx.session.instance import InstanceManager

    snapshot_id = _read(layout, layout.snapshot_out(name)).decode().split("\n", 1)[0]
    instance = InstanceManager(_store(layout)).run_for_build(snapshot_id)
    if instance.status == "failed":
        raise DomarkxError(
            f"the run failed: {instance.error}",
            file=layout.source(name),
            hint=f"`domarkx export {instance.instance_id[:12]}` shows every output",
        )
    record = {
        "domarkx": BUILD_VERSION,
        "snapshot_id": snapshot_id,
        "instance_id": instance.instance_id,
        "status": instance.status,
        "llm_records": instance.llm_records,
    }
    write_if_changed(layout.abs(layout.run_out(name)), json.dumps(record, indent=1) + "\n")


def export_text(layout: Layout, name: str) -> str:
    """The Markdown the export stage writes for ``name`` (also what ``--check`` expects)."""
    from domarkx.errors import RefError
    from domarkx.session.export import render

    record = json.loads(_read(layout, layout.run_out(name)))
    store = _store(layout)
    try:
        instance = store.get_instance(record["instance_id"])
    except RefError:
        # Pruned since the run: the execution cache brings it back without running.
        from domarkx.session.instance import InstanceManager

        instance = InstanceManager(store).run_for_build(record["snapshot_id"])
    snapshot = store.get_snapshot(instance.snapshot_id)
    return render(snapshot, instance.conversation, instance=instance)


@_stage
def export(layout: Layout, name: str) -> None:
    """``.domarkx/exports/<name>.md`` from the instance's conversation."""
    write_if_changed(layout.abs(layout.export_out(name)), export_text(layout, name))
