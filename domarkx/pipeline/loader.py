"""Where domarkx meets doit: the task loaders and the in-process run.

Only doit's documented extension points are used here: ``TaskLoader2``
loaders (``NamespaceTaskLoader``) and ``DoitMain(loader).run(argv)``;
command-line variables (``doit user=ana``) are read through ``doit.get_var``
(``params``). The other
doit-facing pieces are documented ones too: ``DOIT_CONFIG`` (``tasks``), a
reporter class (``progress``) and ``TaskFailed`` (``stages``).

Run the task graph in-process: ``domarkx build`` and ``domarkx watch``.

``BuildLoader`` is a doit ``TaskLoader2``: it loads the project's own
``dodo.py`` when there is one (so ``domarkx build`` and ``doit`` run the
same graph, extra tasks included), else domarkx's graph directly. Either
way it works in the project root, as ``doit`` does in the dodo's folder.

``SessionsLoader`` loads the tasks of a few sessions only, with a reporter
object given by the caller: the watch loop rebuilds what a save touched
without building a task list for the whole project.
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

from doit.cmd_base import NamespaceTaskLoader
from doit.doit_cmd import DoitMain

from domarkx.data.layout import STAGES, Layout
from domarkx.pipeline import tasks as graph


class BuildLoader(NamespaceTaskLoader):  # type: ignore[misc]  # doit has no types
    """The project's dodo.py (or domarkx's graph when it has none), from its root."""

    def __init__(self, layout: Layout, use_dodo: bool = True) -> None:
        super().__init__()
        self.layout = layout
        self.use_dodo = use_dodo

    def setup(self, opt_values: dict[str, Any]) -> None:
        os.chdir(self.layout.root)
        dodo = os.path.join(self.layout.root, "dodo.py")
        if self.use_dodo and os.path.isfile(dodo):
            self.namespace = dict(inspect.getmembers(_load_dodo(dodo)))
        else:
            self.namespace = {
                "DOIT_CONFIG": graph.doit_config(self.layout),
                "task_sessions": graph.task_sessions,
            }


class SessionsLoader(NamespaceTaskLoader):  # type: ignore[misc]
    """The tasks of ``names`` up to ``until``, reported to ``reporter`` (an object)."""

    def __init__(
        self,
        layout: Layout,
        names: Iterable[str],
        until: str = "export",
        reporter: Any = None,
        params: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.names = sorted(names)
        self.stages = STAGES[: STAGES.index(until) + 1]
        self.reporter = reporter
        self.params = params

    def setup(self, opt_values: dict[str, Any]) -> None:
        layout, names, stages, params = self.layout, self.names, self.stages, self.params
        os.chdir(layout.root)

        def task_sessions() -> Iterator[dict[str, Any]]:
            return graph.session_tasks(layout, params, names, stages)

        config = graph.doit_config(layout, names)
        if self.reporter is not None:
            config["reporter"] = self.reporter
        self.namespace = {"DOIT_CONFIG": config, "task_sessions": task_sessions}


def _load_dodo(path: str) -> ModuleType:
    """Import ``path`` as module ``dodo``, afresh (one process may build several projects).

    It is registered in ``sys.modules`` as doit does, so that actions defined
    in it stay picklable for ``-P process``.
    """
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("dodo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dodo"] = module
    spec.loader.exec_module(module)
    return module


def run_doit(loader: NamespaceTaskLoader, argv: Sequence[str]) -> int:
    """``doit ARGV`` with ``loader``'s tasks, in this process; doit's exit status."""
    try:
        status: int = _DoitMain(loader, extra_config={"GLOBAL": {}}).run(list(argv))
        return status
    finally:
        # Loading the tasks turns the cyclic collector off for the build (see
        # tasks.doit_config); a run that failed before its reporter started
        # must not leave it off in a process that goes on (watch).
        gc.unfreeze()
        gc.enable()


class _DoitMain(DoitMain):  # type: ignore[misc]
    # doit names itself in hints ("Type `doit list`..."); the process is `domarkx`,
    # but what it runs is doit's graph, and `doit list` is the command that helps.
    BIN_NAME = "doit"
