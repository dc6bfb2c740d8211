"""The work of each pipeline stage, and the one-session chain a cold-build worker runs.

Each stage reads the previous stage's cache file and writes its own, always
atomically, and only when the content changed (so doit's checks downstream
see an unchanged file and stop there). One ``make_*`` function per stage
does its work; the doit actions (``actions``) are thin tasks around them,
and ``build_one`` runs the same functions one after the other for a worker
of the pool (``workers``), which hands its result to the tasks. Heavy
imports (markdown-it, pydantic models, jinja2, engines) happen when a stage
first runs, never when doit loads the task list.

The stages' outputs live in a folder named by the domarkx version and the
caches' format (``layout.BUILD_CACHES``): a new version finds none of them
and re-runs every stage, with no version file in any task's dependencies
(two ``stat`` and two state entries less per session in every no-op build).
Each output also says which version made it (the expand cache, the
snapshot id file, the run record).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec

from domarkx.data.atomic import write_if_changed
from domarkx.data.digest import digest
from domarkx.data.layout import BUILD_VERSION, Layout
from domarkx.errors import RefError
from domarkx.pipeline import model_sessions, workers
from domarkx.pipeline.params import CommandLineParams
from domarkx.pipeline.selection import EXPAND, EXPORT, RUN, SNAPSHOT

if TYPE_CHECKING:
    from domarkx.data.models import SessionInstance, SessionSnapshot
    from domarkx.data.store import Store
    from domarkx.parsing.markdown import ParsedSession
    from domarkx.session.snapshot import SnapshotManager

P = ParamSpec("P")

# Every macro is a link to ``domarkx://...`` (``parsing.macros``); text without
# this mark has nothing to expand.
MACRO_MARK = b"domarkx://"

_VERSION_JSON = json.dumps(BUILD_VERSION).encode()

# What the stages import when they first run (~250 ms): a worker imports them
# before it waits for the run to start (``prepare``). The libraries that those
# modules import only once a document is read or an export rendered are named
# too: their import would otherwise fall after the start of the run.
STAGE_MODULES = (
    "domarkx.session.snapshot",
    "domarkx.session.instance",
    "domarkx.session.export",
    "domarkx.pipeline.run_cache",
    "markdown_it",
    "yaml",
    "jinja2",
)


def read(layout: Layout, path: str) -> bytes:
    """The bytes of a file of the layout."""
    with open(layout.abs(path), "rb") as handle:
        return handle.read()


def prepare() -> None:
    """Import what the stages use (a worker does it before the run starts)."""
    for module in STAGE_MODULES:
        importlib.import_module(module)
    # The engines (loaded with ``STAGE_MODULES`` above): the run stage's first look-up
    # of the default engine scans the installed engines' entry points.
    from domarkx.execution.engine import engine_class

    engine_class("local_shell")


# The store and the snapshot manager of each project (a layout) this process built:
# neither keeps any state but its paths, and a cold build asks for them ~3,000 times.
_stores: dict[Layout, Store] = {}
_managers: dict[Layout, SnapshotManager] = {}


def store_of(layout: Layout) -> Store:
    """The project's store."""
    found = _stores.get(layout)
    if found is None:
        # ~2 ms of module set-up that a no-op build, which opens no store, does without.
        from domarkx.data.store import Store

        found = _stores[layout] = Store.of(layout)
    return found


def _manager(layout: Layout) -> SnapshotManager:
    found = _managers.get(layout)
    if found is None:
        # The parser, macros and pydantic models (~250 ms with run_cache and jinja2):
        # loaded by the first stage that runs, never by a no-op build's task list.
        from domarkx.session.snapshot import SnapshotManager

        found = _managers[layout] = SnapshotManager(store_of(layout))
    return found


def _expanded_model() -> Any:  # a pydantic model class built on first use
    """``{"domarkx": version, "included": [...], "session": ParsedSession}``: expand's cache."""
    global _Expanded
    if _Expanded is None:
        # pydantic and the parser's models (see ``_manager``); pydantic also reads the
        # annotation's class at run time, hence not an import for type checking only.
        from pydantic import BaseModel

        from domarkx.parsing.markdown import ParsedSession  # noqa: F401

        class Expanded(BaseModel):
            domarkx: str
            included: list[str]
            session: ParsedSession

        _Expanded = Expanded
    return _Expanded


_Expanded: Any = None


def expand_stamp(layout: Layout, values: Mapping[str, str | None]) -> str:
    """The stamp of an expansion: the domarkx version and the parameters it looked up."""
    return layout.stamp("expand", {"domarkx": BUILD_VERSION, "params": dict(values)})


# What each stage makes --------------------------------------------------------------
def make_parse(layout: Layout, name: str) -> bytes:
    """Parse the session and write its parse cache (and model mark); its bytes."""
    parsed = _manager(layout).parse(Path(layout.abs(layout.source(name))))
    return write_parsed(layout, name, parsed)


def write_parsed(layout: Layout, name: str, parsed: ParsedSession) -> bytes:
    """Write a session's parse cache (and its model mark); its bytes, for the next stage."""
    data = parsed.model_dump_json().encode("utf-8")
    write_if_changed(layout.abs(layout.parse_out(name)), data)
    model_sessions.note(layout, name, parsed.execution_config)
    return data


def expand_output(parsed: bytes) -> bytes:
    """The expand cache of a parsed session without a macro: the session as it is."""
    return b'{"domarkx":%s,"included":[],"session":%s}' % (_VERSION_JSON, parsed)


def make_expand(
    layout: Layout, parsed: bytes, lookup: Mapping[str, str]
) -> tuple[bytes | str, list[str]]:
    """The expand cache of a parse cache, and the files its macros included."""
    if MACRO_MARK not in parsed:
        # Without a macro, expansion gives back the session unchanged: skip the
        # validation, deep copy and serialisation (most of this stage's cost).
        return expand_output(parsed), []
    # The parser's models (see ``_manager``).
    from domarkx.parsing.markdown import ParsedSession

    session = ParsedSession.model_validate_json(parsed)
    expanded, included = _manager(layout).expand(session, lookup)
    model = _expanded_model()
    output = model(domarkx=BUILD_VERSION, included=included, session=expanded).model_dump_json()
    return output, included


def make_snapshot(layout: Layout, expanded: bytes) -> str:
    """Store the snapshot of an expand cache (content-addressed); its id."""
    session = _expanded_model().model_validate_json(expanded).session
    manager = _manager(layout)
    built, text = manager.build_with_json(session)  # one dump of the model for both
    if not os.path.exists(manager.store.snapshot_path(built.snapshot_id)):
        manager.store.put_snapshot(built, text)
    return built.snapshot_id


def write_snapshot_out(layout: Layout, name: str, snapshot_id: str) -> None:
    """Tag the snapshot ``<name>`` and write the snapshot stage's output (its id)."""
    store_of(layout).retag(name, snapshot_id)
    write_if_changed(layout.abs(layout.snapshot_out(name)), f"{snapshot_id}\n{BUILD_VERSION}\n")


def make_run(
    layout: Layout, snapshot_id: str, name: str, cached_only: bool = False
) -> SessionInstance | None:
    """The finished instance of a snapshot (None: it must run, and ``cached_only``)."""
    # The build's execution cache and the instance runtime (see ``_manager``).
    from domarkx.pipeline.run_cache import cached_for_build, run_for_build
    from domarkx.session.agents import Agents  # (the same)
    from domarkx.session.instance import InstanceManager  # (the same)

    manager = InstanceManager(store_of(layout))
    if cached_only:
        return cached_for_build(manager, snapshot_id, name)
    # The session tools, in a workspace of this run's own (never sessions/): docs/llm.md.
    manager.host_tools = Agents.for_build(manager.store, name, manager.approval).tools()
    return run_for_build(manager, snapshot_id, name)


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
    # Checks of expect blocks that failed (session.check_run): the run task fails on them.
    failed = [
        f"{item.get('kind')}: {item.get('detail')}"
        for m in instance.conversation
        for item in (m.message_metadata or {}).get("checks") or []
        if isinstance(item, dict) and not item.get("passed")
    ]
    if failed:
        record["failed_checks"] = failed
    records = sorted({layout.replay_record(key) for key in instance.llm_records})
    if any("checks" in (m.message_metadata or {}) for m in instance.conversation):
        # reason: pydantic's settings models (~100 ms), loaded only for a run with checks
        from domarkx.config import CONFIG_FILE, PYPROJECT

        # Its [checks] settings (the judge's endpoint, model, prompt) decide the results:
        # an edit of the file runs the task again, and the execution cache, whose key
        # holds those settings, answers unless they changed (pipeline.run_cache).
        records += [CONFIG_FILE, PYPROJECT]
    return json.dumps(record, indent=1) + "\n", records


def instance_text(store: Store, instance: SessionInstance) -> str:
    """An instance exported as Markdown, with its snapshot's preamble and template."""
    # jinja2 and the templates (see ``_manager``).
    from domarkx.session.export import render

    snapshot: SessionSnapshot = store.get_snapshot(instance.snapshot_id)
    return render(snapshot, instance.conversation, instance=instance)


def export_text(layout: Layout, name: str) -> str:
    """The Markdown the export stage writes for ``name`` (also what ``--check`` expects)."""
    record = json.loads(read(layout, layout.run_out(name)))
    store = store_of(layout)
    try:
        instance = store.get_instance(record["instance_id"])
    except RefError:
        # Pruned since the run: the execution cache brings it back without running.
        found = make_run(layout, record["snapshot_id"], name)
        assert found is not None
        instance = found
    return instance_text(store, instance)


# The chain a worker runs ---------------------------------------------------------
class Result(NamedTuple):
    """How far a worker took one session (None: a stage it left to the task).

    A NamedTuple: every build imports this module, and making a frozen
    dataclass costs ~0.8 ms of it.
    """

    stamp: tuple[int, int] | None  # the document's mtime and size when it was read
    expanded: bytes | None = None  # the expand cache it wrote
    snapshot: str | None = None  # the snapshot's id (stored, tagged, its id file written)
    run: tuple[str, list[str]] | None = None  # the run cache file and its replay records
    export: str | None = None  # the export's text
    # A session with macros: the files its expansion included, and the digest of the
    # parse cache it expanded (the expand task takes it only for those very bytes).
    included: tuple[str, ...] | None = None
    parsed: str | None = None
    # It read the parse cache, current by its date, rather than parse the document:
    # the parse task, if it runs (the document changed after all), parses it itself.
    from_cache: bool = False


class ParameterAsked(Exception):
    """A macro looked up a parameter: a worker leaves the expansion to the task."""


class NoParameters(CommandLineParams):
    """A worker's parameters: none (doit's command-line variables are the task's)."""

    def get_value(self, name: str) -> str | None:
        raise ParameterAsked(name)


def parsed_digest(data: bytes) -> str:
    """What tells a parse cache's bytes apart, cheaply."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def build_one(layout: Layout, name: str, wanted: int) -> Result:
    """Take one session as far as ``wanted`` (stage bits) and the caches allow.

    The same functions as the tasks. The parse, expand and snapshot stages'
    outputs are written here, as their tasks write them (a task then finds
    them as it would write them); the snapshot and instance go into the
    store (content-addressed: the same content is the same file).
    The run cache and the export are left to their tasks, which check that
    they were made from their input. Nothing runs here: a session with code
    to run (or a model to ask) is its run task's.
    """
    source = layout.abs(layout.source(name))
    before = os.stat(source)
    stamp = (before.st_mtime_ns, before.st_size)
    parse_out = layout.abs(layout.parse_out(name))
    try:
        # Parsed since its last edit (an include changed): its parse cache is current.
        current = os.stat(parse_out).st_mtime_ns >= before.st_mtime_ns
    except OSError:
        current = False
    data = read(layout, layout.parse_out(name)) if current else make_parse(layout, name)
    if not wanted & EXPAND:
        return Result(stamp, from_cache=current)
    included: tuple[str, ...] | None = None
    digest_of_parsed: str | None = None
    if MACRO_MARK in data:
        try:
            expanded, files = make_expand(layout, data, NoParameters())
        except ParameterAsked:
            return Result(stamp, from_cache=current)
        output = expanded.encode() if isinstance(expanded, str) else expanded
        included, digest_of_parsed = tuple(files), parsed_digest(data)
    elif os.path.exists(layout.abs(layout.deps_file(name))):
        return Result(stamp, from_cache=current)  # its task drops the old includes
    else:
        output = expand_output(data)
    write_if_changed(layout.abs(layout.expand_out(name)), output)
    done = Result(stamp, output, included=included, parsed=digest_of_parsed, from_cache=current)
    if not wanted & SNAPSHOT:
        return done
    snapshot = make_snapshot(layout, output)
    # The task's output too: creating files is a good part of a cold build's cost.
    write_snapshot_out(layout, name, snapshot)
    done = done._replace(snapshot=snapshot)
    if not wanted & RUN:
        return done
    instance = make_run(layout, snapshot, name, cached_only=True)
    if instance is None or instance.status == "failed":
        return done  # it runs: its task does that
    done = done._replace(run=run_record(layout, snapshot, instance))
    if not wanted & EXPORT:
        return done
    return done._replace(export=instance_text(store_of(layout), instance))


def start_workers(layout: Layout, stale: list[str]) -> None:
    """Start the pool that builds ``stale`` sessions ahead of their tasks (``workers``)."""
    prepared = all(module in sys.modules for module in STAGE_MODULES)
    workers.start_pool(layout, stale, partial(build_one, layout), prepare, prepared)
