"""``domarkx watch``: rebuild what a save touched, until Ctrl-C.

The loop watches ``sessions/`` and the folders of every included file
(watchfiles, with a short ``step`` so a save is seen in ~10 ms). A change
to a session rebuilds that session; a change to an included file rebuilds
the sessions that include it, found in the deps files the expand stage
writes. Rebuilds run through doit in this process, with the tasks of the
touched sessions only (``loader.SessionsLoader``), so doit's database stays
the one ``doit`` uses and a save costs milliseconds, not a reload of the
whole project. A broken document is reported and the loop goes on.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domarkx.data.layout import SESSIONS_DIR, STAGES, Layout
from domarkx.pipeline.loader import SessionsLoader, run_doit
from domarkx.pipeline.progress import BuildReporter


class WatchReporter(BuildReporter):
    """Collects results quietly; waits for the build lock instead of failing."""

    wait_for_lock = True


@dataclass
class Rebuild:
    """What one build did."""

    names: list[str]
    seconds: float
    executed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    summary: str = ""


class Watcher:
    """The state of one watch: the project, how far to build, who includes what."""

    def __init__(
        self,
        layout: Layout,
        until: str = "snapshot",
        echo: Callable[[str], None] | None = None,
        params: dict[str, str] | None = None,
        step: int = 10,
    ) -> None:
        if until not in STAGES:
            raise ValueError(f"until must be one of {', '.join(STAGES)}")
        self.layout = layout
        self.until = until
        self.echo = echo or _print
        self.params = dict(params or {})
        self.step = step
        self.includes: dict[str, list[str]] = {}

    # Building -----------------------------------------------------------------
    def build(self, names: Iterable[str]) -> Rebuild:
        """Build ``names`` up to ``until`` through doit, in this process."""
        names = sorted(set(names))
        reporter = WatchReporter(io.StringIO(), {})
        loader = SessionsLoader(self.layout, names, self.until, reporter, self.params)
        started = time.monotonic()
        targets = [f"{self.until}:{name}" for name in names] or [self.until]
        run_doit(loader, ["run", "--continue", *targets])
        result = Rebuild(
            names,
            time.monotonic() - started,
            list(reporter.executed),
            list(reporter.failed),
            list(reporter.runtime_errors),
            reporter.summary(),
        )
        for name in names:
            self.includes[name] = self.layout.read_deps(name)
        return result

    # What a change touches -------------------------------------------------------
    def affected(self, paths: Iterable[str]) -> tuple[set[str], set[str]]:
        """Sessions to rebuild and sessions removed, for changed absolute ``paths``."""
        rebuild: set[str] = set()
        removed: set[str] = set()
        included_by = self._included_by()
        for path in paths:
            path = os.path.abspath(path)
            relative = os.path.relpath(path, self.layout.root).replace(os.sep, "/")
            name = self.layout.session_of(path)
            if name is not None and os.path.isfile(path):
                rebuild.add(name)
            elif name is not None:
                removed.add(name)
                self.includes.pop(name, None)
            rebuild.update(included_by.get(relative, ()))
        rebuild -= removed
        # A session deleted while nothing watched (or whose deletion was missed)
        # still has its deps file: an include it used is no reason to build it.
        for name in sorted(rebuild):
            if not os.path.isfile(self.layout.abs(self.layout.source(name))):
                rebuild.discard(name)
                self.includes.pop(name, None)
        return rebuild, removed

    def touches(self, path: str) -> bool:
        """Whether a change of ``path`` concerns a session: a session file or an include."""
        path = os.path.abspath(path)
        if self.layout.session_of(path) is not None:
            return True
        relative = os.path.relpath(path, self.layout.root).replace(os.sep, "/")
        return relative in self._included_by()

    def _included_by(self) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for name, files in self.includes.items():
            for file in files:
                result.setdefault(file, set()).add(name)
        return result

    def watched_paths(self) -> list[str]:
        """``sessions/`` and the folders of included files that lie outside it."""
        sessions_dir = self.layout.abs(SESSIONS_DIR)
        folders = {sessions_dir}
        for files in self.includes.values():
            for file in files:
                folder = os.path.dirname(self.layout.abs(file))
                if not (folder + os.sep).startswith(sessions_dir + os.sep) and os.path.isdir(
                    folder
                ):
                    folders.add(folder)
        return sorted(folders)

    # The loop -------------------------------------------------------------------
    def loop(self, stop_event: Any = None, ready: Callable[[], None] | None = None) -> int:
        """Watch until Ctrl-C (or ``stop_event``); 0 when stopped that way."""
        os.makedirs(self.layout.abs(SESSIONS_DIR), exist_ok=True)
        self.includes = self.layout.included_files()
        changes: _Changes | None = None
        try:
            # The watcher starts before the first build, so that a save made while
            # it runs waits in the watcher's queue instead of being missed.
            paths = self.watched_paths()
            changes = _Changes(paths, self.layout.abs(self.layout.home), self.step, stop_event)
            first = self.build(self.layout.session_names())
            self.echo(
                f"{_clock()} built {len(first.names)} sessions up to {self.until}: "
                f"{first.summary} ({first.seconds:.2f} s)"
            )
            self._echo_failures(first)
            announced: list[str] = []
            while True:
                if self.watched_paths() != paths:  # an include lies in a new folder
                    changes.close()
                    paths = self.watched_paths()
                    changes = _Changes(paths, changes.ignored, self.step, stop_event)
                if announced != paths:
                    shown = ", ".join(self._shown(paths))
                    self.echo(f"{_clock()} watching {shown} (Ctrl-C to stop)")
                    announced = paths
                    if ready is not None:
                        ready()
                        ready = None
                batch = changes.next()
                if batch is None:
                    break
                if batch:
                    self.handle(batch)
        except KeyboardInterrupt:
            pass
        finally:
            if changes is not None:
                changes.close()
        self.echo(f"{_clock()} stopped")
        return 0

    def handle(self, paths: set[str]) -> Rebuild | None:
        """Rebuild for one batch of changed paths and print one line about it."""
        started = time.monotonic()
        paths = {self._canonical(path) for path in paths}
        store = os.path.realpath(self.layout.abs(self.layout.home)) + os.sep
        paths = {path for path in paths if not path.startswith(store)}
        if not paths:
            return None
        rebuild, removed = self.affected(paths)
        # Only the files that touch a session: an editor's own files saved beside it
        # (``.#x.md``, ``x.md~``, ``.x.md.swp``, vim's ``4913``) are not news.
        shown = ", ".join(self._shown(sorted(p for p in paths if self.touches(p))))
        for name in sorted(removed):
            self.echo(f"{_clock()} removed {self.layout.source(name)}")
        if not rebuild:
            return None
        result = self.build(rebuild)
        took = (time.monotonic() - started) * 1000
        failed = {task.split(":", 1)[-1] for task, _ in result.failed}
        built = [name for name in result.names if name not in failed]
        if result.executed:
            what = f"rebuilt {', '.join(built)} up to {self.until}" if built else ""
        else:
            what = "up to date"
        if failed:
            what = (what + "; " if what else "") + f"failed: {', '.join(sorted(failed))}"
        self.echo(f"{_clock()} {shown} changed: {what} ({took:.0f} ms)")
        self._echo_failures(result)
        return result

    def _canonical(self, path: str) -> str:
        """``path`` by its own name when it reaches this project through a symlinked folder.

        A link such as ``sessions/up -> ..`` makes every file of the project
        (its store included) show up again under another name, and the watcher
        may report a save under either; the build walks each folder once. A
        linked folder from outside the project keeps its name.
        """
        folder, base = os.path.split(os.path.abspath(path))
        real = os.path.realpath(folder)
        root = os.path.realpath(self.layout.root)
        if real != root and not real.startswith(root + os.sep):
            return path
        return os.path.join(self.layout.root, os.path.relpath(real, root), base)

    def _echo_failures(self, result: Rebuild) -> None:
        for task, message in result.failed:
            self.echo(f"    {task}: {_indent(message)}")
        for message in result.errors:
            self.echo(f"    {_indent(message)}")

    def _shown(self, paths: Iterable[str]) -> list[str]:
        shown = []
        for path in paths:
            relative = os.path.relpath(path, self.layout.root)
            shown.append(path if relative.startswith("..") else relative.replace(os.sep, "/"))
        return shown


class _Changes:
    """Batches of changed paths from watchfiles; watching from construction on."""

    def __init__(self, paths: list[str], ignored: str, step: int, stop_event: Any) -> None:
        import watchfiles  # ~55 ms, and only `domarkx watch` uses it

        self.ignored = ignored
        self.gen = watchfiles.watch(
            *paths,
            watch_filter=watchfiles.DefaultFilter(ignore_paths=[ignored]),
            step=step,
            stop_event=stop_event,
            rust_timeout=100,
            yield_on_timeout=True,  # an empty batch every 100 ms keeps Ctrl-C and stop prompt
            raise_interrupt=True,
        )
        # The generator sets up its watches on the first step: take it now.
        self.pending: set[tuple[Any, str]] | None = next(self.gen, None)

    def next(self) -> set[str] | None:
        """The next batch of changed paths (empty on a timeout); None once stopped."""
        batch: set[tuple[Any, str]] | None
        if self.pending is not None:
            batch, self.pending = self.pending, None
        else:
            batch = next(self.gen, None)
        return None if batch is None else {path for _, path in batch}

    def close(self) -> None:
        self.gen.close()


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
