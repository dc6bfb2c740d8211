"""doit reporters: a progress line on a terminal, one summary line at the end.

``ProgressReporter`` is the default of the task graph (``DOIT_CONFIG``). It
prints ``.  task`` for every task it executes, as doit does, but not the
``-- task`` line doit prints for each up-to-date task (thousands of them in a
large project); the summary at the end counts them instead. On a terminal a
status line under the output shows which task runs, how many of how many are
done, and the time; when the output is not a terminal that line is left out.

The reporters only report. What a run needs besides (the build lock, ending
what a killed run left, the cold-build workers) is ``workers.begin_run`` and
``workers.end_run``, which a reporter calls at doit's start and end of a run
(the only hooks doit gives there).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from typing import Any

from doit.exceptions import InvalidTask, UnmetDependency
from doit.reporter import ConsoleReporter

from domarkx import signals
from domarkx.errors import DomarkxError
from domarkx.pipeline import workers
from domarkx.pipeline.selection import reached_tasks

REFRESH = 0.1  # seconds between repaints of the status line


class _ReaderGone:
    """An output stream that goes quiet when its reader leaves (``doit | head``).

    The build goes on (its work is not the output), with no BrokenPipeError
    traceback, now or when Python flushes stdout at exit.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return int(self.stream.write(text) or 0)
            except BrokenPipeError:
                self._left()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._left()

    def isatty(self) -> bool:
        return bool(self.stream.isatty())

    def _left(self) -> None:
        self.gone = True
        try:
            fd = self.stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (AttributeError, OSError, ValueError):
            pass


class BuildReporter(ConsoleReporter):  # type: ignore[misc]  # doit has no types
    """Counts and collects results; starts and ends the run (``workers``)."""

    desc = "domarkx: executed tasks and a summary"
    wait_for_lock = False
    one_for_failures = False  # end a failed --continue build with exit status 1

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(_ReaderGone(outstream), options)
        self.started = time.monotonic()
        self.waited_before = _waited()
        self.executed: list[str] = []
        self.started_tasks: set[str] = set()
        self.succeeded = 0  # of those, finished without failing: doit saved their state
        self.uptodate = 0
        self.failed: list[tuple[str, str]] = []
        self.unmet = 0
        self.running = False
        self.errors = 0

    # The run ------------------------------------------------------------------
    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        try:
            workers.begin_run(tasks, selected_tasks, wait=self.wait_for_lock)
        except DomarkxError as err:
            raise InvalidTask(str(err)) from None
        self.running = True
        # What the task list made lives through the run: the collector leaves it
        # alone (it was off while tasks were loaded, see tasks.doit_config) and
        # looks only at what the tasks themselves make.
        gc.freeze()
        gc.enable()

    def _release(self) -> None:
        gc.unfreeze()  # a process that builds again (watch) collects this run's tasks
        gc.enable()
        # The run is over, or never began (begin_run failed half-way): stop what
        # it started, give back the lock if it was taken.
        workers.end_run()
        self.running = False

    # Task events --------------------------------------------------------------
    def execute_task(self, task: Any) -> None:
        if task.actions and task.name[0] != "_":
            self.executed.append(task.name)
            self.started_tasks.add(task.name)
            self.task_started(task.name)

    def task_started(self, name: str) -> None:
        pass

    # Only tasks with dependencies are ever up to date, and group tasks have none;
    # ``task.actions`` is not read here because doit builds action objects on access.
    def skip_uptodate(self, task: Any) -> None:
        self.uptodate += 1

    def add_success(self, task: Any) -> None:
        if task.name in self.started_tasks:  # a task with actions, not a stage's group
            self.succeeded += 1

    def skip_ignore(self, task: Any) -> None:
        self.uptodate += 1

    def add_failure(self, task: Any, fail: Any) -> None:
        if isinstance(fail, UnmetDependency):
            if task.subtask_of is not None or task.actions:  # not a stage's group task
                self.unmet += 1
            return
        if type(fail).__name__ != "TaskFailed":
            self.errors += 1  # an exception in a task (a bug), not a user's error
        self.failed.append((task.name, self.describe(fail)))
        self.failure_reported(task.name, self.failed[-1][1])

    def failure_reported(self, name: str, message: str) -> None:
        pass

    @staticmethod
    def describe(fail: Any) -> str:
        """A task failure's message; the traceback only for unexpected errors."""
        if type(fail).__name__ == "TaskFailed" and not fail.traceback:
            return str(fail.message).rstrip("\n")
        return str(fail.get_msg()).rstrip("\n")

    def complete_run(self) -> None:
        self._release()
        interrupt = sys.exc_info()[1]
        if isinstance(interrupt, KeyboardInterrupt):
            self.interrupted(interrupt)
        elif self.one_for_failures and self.failed and not self.errors and self.unmet:
            # doit counts "not run: a dependency failed" (``--continue``) as an error
            # and exits 2; what failed is a user's document, which is exit status 1,
            # as `domarkx build -c` reports it. (Not for a watch's in-process builds.)
            raise SystemExit(1)

    def interrupted(self, interrupt: KeyboardInterrupt) -> None:
        """Ctrl-C, SIGTERM or SIGHUP: say so, and end with 128 + signal, no traceback.

        doit saved the state of the tasks that finished and runs this in its
        ``finally``; raising ``SystemExit`` here replaces the interrupt, which
        would otherwise end ``doit`` with a traceback after this summary.
        """
        why = f" by {interrupt}" if isinstance(interrupt, signals.Terminated) else ""
        done = self.succeeded  # not the tasks started: those still running saved nothing
        self.outstream.write(
            f"domarkx: interrupted{why}: {done} task(s) finished and saved; "
            "the next build goes on from there\n"
        )
        self.outstream.flush()
        raise SystemExit(signals.exit_status(interrupt))

    # Results ------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Seconds since the build started, less the time it waited at approval prompts."""
        return time.monotonic() - self.started - (_waited() - self.waited_before)

    def summary(self) -> str:
        parts = []
        if len(self.executed) > len(self.failed):
            parts.append(f"{len(self.executed) - len(self.failed)} run")
        if self.uptodate:
            parts.append(f"{self.uptodate} up to date")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.unmet:
            parts.append(f"{self.unmet} not run (a dependency failed)")
        if not self.executed and not self.failed and not self.runtime_errors:
            if not self.uptodate:
                return "nothing to build"
            return f"nothing to do: all {self.uptodate} tasks up to date"
        return ", ".join(parts)


class ProgressReporter(BuildReporter):
    """The task graph's default reporter (see the module's docstring)."""

    desc = "domarkx: executed tasks, progress on a terminal, a summary"
    one_for_failures = True

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        try:
            self.tty = bool(outstream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.total = 0
        self.current = ""
        self.painted = 0.0
        self.status_shown = False
        # What a user wants to know: sessions done, and time left. A session is
        # done when its last task is; time left weighs each stage's remaining
        # tasks by what its tasks took so far (a run costs more than a parse).
        self.left_of: dict[str, int] = {}  # session -> its tasks not finished yet
        self.sessions_done = 0
        self.stage_left: dict[str, int] = {}
        self.stage_time: dict[str, list[float]] = {}  # stage -> [seconds, tasks timed]
        self.task_began = 0.0

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        super().initialize(tasks, selected_tasks)
        if self.tty:
            for name in reached_tasks(tasks, selected_tasks):
                if not tasks[name].actions:
                    continue
                self.total += 1
                stage, _, session = name.partition(":")
                if session:
                    self.left_of[session] = self.left_of.get(session, 0) + 1
                self.stage_left[stage] = self.stage_left.get(stage, 0) + 1

    def write(self, text: str) -> None:
        self._clear_status()
        self.outstream.write(text)

    def task_started(self, name: str) -> None:
        self.write(f".  {name}\n")
        self.current = name
        self.task_began = time.monotonic() - _waited()
        self._paint()

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        if self.tty:  # a no-op build calls this for every task
            self._finished(task.name, timed=False)
            self._paint()

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        self._finished(task.name, timed=True)
        self._paint()

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        self._finished(task.name, timed=not isinstance(fail, UnmetDependency))

    def _finished(self, name: str, timed: bool) -> None:
        if not self.tty:
            return
        stage, _, session = name.partition(":")
        if stage in self.stage_left:
            self.stage_left[stage] -= 1
            if timed:
                spent = self.stage_time.setdefault(stage, [0.0, 0])
                spent[0] += time.monotonic() - _waited() - self.task_began
                spent[1] += 1
        left = self.left_of.get(session)
        if left is not None:
            self.left_of[session] = left - 1
            if left == 1:
                self.sessions_done += 1

    def time_left(self) -> float | None:
        """Seconds left, from each stage's mean task time; None until the run stage has one."""
        means = {stage: spent[0] / spent[1] for stage, spent in self.stage_time.items() if spent[1]}
        if not means:
            return None
        total = 0.0
        for stage, left in self.stage_left.items():
            if left <= 0:
                continue
            if stage not in means and stage == "run":
                return None  # the costly stage has no sample yet: no honest guess
            total += left * means.get(stage, min(means.values()))
        return total

    def failure_reported(self, name: str, message: str) -> None:
        self.write(f"FAILED {name}: {_indent(message)}\n")

    def complete_run(self) -> None:
        try:
            self._clear_status()
            for message in self.runtime_errors:
                self.outstream.write(f"domarkx: error: {message}\n")
            interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
            if not interrupted and (self.executed or self.uptodate or not self.runtime_errors):
                self.outstream.write(f"domarkx: {self.summary()} ({self.seconds:.2f} s)\n")
            self.outstream.flush()
        finally:
            super().complete_run()

    # The status line ------------------------------------------------------------
    def _done(self) -> int:
        return len(self.executed) + self.uptodate + self.unmet

    def _paint(self) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.painted < REFRESH and self.status_shown:
            return
        self.painted = now
        total = max(self.total, self._done())
        sessions = len(self.left_of)
        left = self.time_left()
        eta = f", ~{left:.0f} s left" if left is not None else ""
        line = (
            f"[{self.sessions_done}/{sessions} sessions done] {self.seconds:.1f} s{eta}  "
            f"(task {self._done()}/{total}) {self.current}"
        )
        self.outstream.write("\r" + line[: _columns()] + "\x1b[K")
        self.outstream.flush()
        self.status_shown = True

    def _clear_status(self) -> None:
        if self.status_shown:
            self.outstream.write("\r\x1b[K")
            self.status_shown = False


def _columns() -> int:
    return max(20, shutil.get_terminal_size((80, 24)).columns - 1)


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def _waited() -> float:
    """Seconds this process spent at approval prompts. The prompt's module is read only
    when a run has loaded it (a plain no-op ``doit`` loads no configuration): none before."""
    approval = sys.modules.get("domarkx.session.approval")
    # ``waited`` is missing too while a task's thread is still importing the module.
    waited = getattr(approval, "waited", None)
    return float(waited()) if waited is not None else 0.0
