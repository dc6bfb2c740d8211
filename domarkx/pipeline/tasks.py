"""The doit task graph: five tasks per session, each an ordinary doit task.

A project's ``dodo.py`` is one line::

    from domarkx.pipeline.tasks import *  # noqa: F403

which brings ``DOIT_CONFIG`` and ``task_sessions``. Every
``sessions/**/*.md`` (less partials: ``_*`` files and folders) named ``a/b``
for ``sessions/a/b.md`` gets::

    parse:a/b -> expand:a/b -> snapshot:a/b -> run:a/b -> export:a/b

linked by files: each task's target is the next one's ``file_dep`` (see
``layout.Layout`` for the paths), so doit orders them and re-runs a stage
only when its input changed. ``expand`` also depends on every file the
session included (read from the small deps file its last run wrote).
A session whose macros looked up parameters has its ``expand`` depend on
their values too (``--param``, read through ``doit.get_var``), through a
stamp file (``Layout.stamp``). A new domarkx version needs no dependency:
the stages' outputs are in a folder of that version
(``layout.BUILD_CACHES``), so every target is missing and every stage runs.

Loading this module happens on every ``doit`` run, even a no-op over
thousands of sessions, so it imports nothing heavy, never reads a session
document, and does stat-level work only.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from doit.exceptions import InvalidTask

from domarkx import overlap
from domarkx.config.paths import setting_files
from domarkx.data.layout import STAGES, Layout
from domarkx.errors import DomarkxError
from domarkx.pipeline import actions, model_sessions, shard, stages, workers
from domarkx.pipeline.params import CommandLineParams
from domarkx.pipeline.progress import ProgressReporter

# DOIT_CONFIG comes from the module-level __getattr__ below.
__all__ = ["DOIT_CONFIG", "task_sessions"]  # noqa: F822

STAGE_DOCS = {
    "parse": "parse session documents (sessions/**/*.md)",
    "expand": "expand macros and includes",
    "snapshot": "store content-addressed snapshots",
    "run": "run setup scripts and code blocks (cached by code)",
    "export": "write .domarkx/exports/<session>.md",
}


def doit_config(layout: Layout | None = None, names: list[str] | None = None) -> dict[str, Any]:
    """doit settings: the dependency database in ``.domarkx/``, the progress reporter.

    ``names``: the sessions of this build, when not the whole project.
    """
    layout = layout or Layout.at()
    # Loading thousands of tasks makes Python's cyclic collector walk the growing
    # heap again and again (a no-op build grows faster than its task count):
    # it stays off until the reporter starts the run (see progress.py).
    gc.disable()
    os.makedirs(layout.abs(layout.home), exist_ok=True)
    threads = overlap.concurrency()
    if names is None:
        # The walk of the sessions, shared with the task list (it starts nothing).
        found = workers.scan(layout)
        names, stale, many = found.names, found.stale, len(found.to_build())
    else:
        stale = workers.stale_sessions(layout, names)
        many = len(stale)
    if (
        threads > 1
        and not overlap.chosen()
        and many >= workers.MIN_SESSIONS
        and not model_sessions.may_ask(layout, names, stale)
    ):
        # Many sessions to parse and none may ask a model: no wait to overlap, and
        # handing thousands of tasks to threads costs more than it gives. (An
        # edit keeps the threads: its tasks wait for the worker while doit goes
        # on checking the others, see workers.py.)
        threads = 1
    return {
        # doit's thread runner, so that model calls overlap (see domarkx/overlap.py),
        # but for a big build that asks no model (above); `doit -n N` / `-P process`
        # on the command line still choose.
        "num_process": threads if threads > 1 else 0,
        "par_type": "thread",
        # doit's JSON state plus a journal of finished tasks (``db.JournalDB``, a
        # doit BACKEND plugin): a killed build keeps what it finished.
        "backend": "domarkx",
        "dep_file": layout.dep_file,
        "reporter": ProgressReporter,
        # The stream of now: doit's own default is the sys.stdout of when doit was
        # first imported, stale in a process that redirects its output later.
        "outfile": sys.stdout,
        # Named so that a bare `doit forget` / `doit clean` has tasks to act on.
        "default_tasks": list(STAGES),
        "minversion": "0.36.0",
    }


def session_tasks(
    layout: Layout | None = None,
    params: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
    stages_wanted: Iterable[str] = STAGES,
) -> Iterator[dict[str, Any]]:
    """The task dicts of every session (or of ``names``), stage by stage.

    ``params`` are the values of parameter macros; None means doit's
    command-line variables (``doit user=ana``, ``domarkx build --param user=ana``).
    """
    layout = layout or Layout.at()
    lookup = CommandLineParams(params)
    odd: set[str] = set()
    if names is None:
        # Walked as doit read its settings (``doit_config``), or now.
        found = workers.take_scan(layout) or workers.scan(layout, remember=False)
        all_names, odd = found.names, found.odd
        try:
            all_names = shard.select(all_names, layout)  # `--shard I/N`: this shard's sessions only
        except DomarkxError as err:
            # doit prints its own task errors as one line, without a traceback.
            raise InvalidTask(str(err)) from None
        # Workers start on the stale sessions while doit loads and checks the tasks.
        stages.start_workers(layout, found.to_build())
        included = found.included
        replayed = layout.replayed_files()
        asked = layout.asked_params()
    else:
        all_names = sorted(names)
        included = {name: layout.read_deps(name) for name in all_names}
        replayed = {
            name: layout.read_deps(name, layout.replay_deps_file(name)) for name in all_names
        }
        asked = {name: layout.read_deps(name, layout.params_file(name)) for name in all_names}
    exists = os.path.exists
    # An include's refusal ([includes] allow) is the configuration's: a session that
    # includes files is expanded again when a configuration file changes.
    settings = setting_files(layout.root)
    wanted = set(stages_wanted)
    inputs = [layout.source(name) for name in all_names]

    args: tuple[Any, ...]
    for stage in STAGES:
        out = getattr(layout, f"{stage}_out")  # once per stage: 5,000 calls in a no-op
        targets = [out(name) for name in all_names]
        if stage not in wanted:
            inputs = targets
            continue
        yield {"basename": stage, "name": None, "doc": STAGE_DOCS[stage]}
        action = getattr(actions, stage)
        for name, source, target in zip(all_names, inputs, targets, strict=True):
            if stage == "parse":
                # A pipe or a looping symlink is no file doit can check: the task
                # runs each time and reports it (a pipe would make doit wait forever).
                file_dep = [] if name in odd else [source]
                args = (layout, name)
            elif stage == "expand":
                # The parameters its last expansion looked up, with today's values: a
                # new value re-expands only the sessions that use that parameter.
                values = {p: lookup.get_value(p) for p in asked.get(name, ())}
                file_dep = [source, stages.expand_stamp(layout, values)] if values else [source]
                # An include that was deleted is left out: the changed list makes
                # doit re-run the stage, which then reports the missing file.
                if name in included:
                    file_dep += [p for p in included[name] if exists(layout.abs(p))]
                    file_dep += settings
                known = dict(params) if params is not None else {}
                known.update({p: v for p, v in values.items() if v is not None})
                args = (layout, name, known)
            else:
                # The version is in the previous stage's output (see ``stages``).
                file_dep = [source]
                args = (layout, name)
                if stage == "run" and name in replayed:
                    # A new recording of a reply this run used re-runs it (and re-exports).
                    file_dep += [p for p in replayed[name] if exists(layout.abs(p))]
            task = {
                "basename": stage,
                "name": name,
                "actions": [(action, args)],
                "file_dep": file_dep,
                "targets": [target],
                "clean": True,
                # Stages print nothing: doit need not capture their output. Its
                # capture swaps sys.stdout per action, which tasks running in
                # threads would tangle (a chain of wrappers, one per task).
                "verbosity": 2,
                "io": {"capture": False},
            }
            if stage == "parse" and name in odd:
                task["uptodate"] = [False]
            yield task
        inputs = targets


def task_sessions() -> Iterator[dict[str, Any]]:
    """Every session: parse, expand, snapshot, run, export."""
    return session_tasks()


def __getattr__(name: str) -> Any:
    # ``DOIT_CONFIG`` is computed on each ``from ... import *`` (for the current
    # folder), not once per process: ``domarkx watch`` and tests load many projects.
    if name == "DOIT_CONFIG":
        return doit_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
