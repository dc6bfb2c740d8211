"""What ``domarkx test`` and the pytest plugin share: find, build and report sessions with checks.

The sessions with an ``expect`` block under the PATHs are built as ``domarkx
build`` builds them, through the doit task graph up to their ``run`` tasks
(``pipeline.loader.SessionsLoader``): an unchanged session whose checks
passed is up to date, and one whose checks failed is answered by the
execution cache, so neither runs its code again. ``--live`` and ``--record``
ask the model again (``DOMARKX_LLM``), which the execution cache leaves to
them. A document outside ``sessions/`` (or a partial), which no build task
stands for, is imported and run on its own. Each check's outcome
(``checks.results.Outcome``) is read from the run's conversation and printed
one line each, then a summary.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from domarkx.checks.junit import SessionReport, write
from domarkx.checks.results import outcomes
from domarkx.checks.turns import TurnChecks, has_checks
from domarkx.cli.options import Args, environment, open_store
from domarkx.config import load
from domarkx.data.layout import SESSIONS_DIR, Layout
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, UsageError
from domarkx.llm.replay import ENV as REPLAY_ENV
from domarkx.llm.replay import ReplayCache
from domarkx.pipeline.loader import SessionsLoader, run_doit
from domarkx.pipeline.progress import BuildReporter
from domarkx.pipeline.run_cache import build_instance
from domarkx.session.approval import YES_ENV, Approval
from domarkx.session.instance import InstanceManager
from domarkx.session.names import display_path
from domarkx.session.snapshot import SnapshotManager


def run(args: Args) -> int:
    """``domarkx test``: each session's lines, the summary, the JUnit file; the exit status."""
    store = open_store()
    mode = "record" if args.record else "live" if args.live else None
    paths = [p for p in session_files(store, args.paths) if has_expect_block(p)]
    with environment(REPLAY_ENV, mode), environment(YES_ENV, "1" if args.yes else None):
        reports = test_sessions(store, paths, fresh=mode is not None)
    for report in reports:
        print_report(report)
    if args.junit:
        write(Path(args.junit), reports)
    return summary(reports)


def test_sessions(store: Store, paths: list[Path], *, fresh: bool = False) -> list[SessionReport]:
    """The report of each of ``paths`` (documents with expect blocks), in their order.

    Sessions of the project are built through the task graph; other documents run
    on their own. ``fresh``: the model is asked again (``DOMARKX_LLM`` says how).
    """
    layout = store.layout
    names = {path: layout.session_of(str(path)) for path in paths}
    built = build_sessions(
        store, {name: path for path, name in names.items() if name is not None}, fresh=fresh
    )
    reports = []
    for path, name in names.items():
        report = built.get(name) if name is not None else None
        if report is None:
            report = test_session(store, path, force=True)
        if report is not None:
            reports.append(report)
    return reports


class TestReporter(BuildReporter):
    """Quiet: collects the failures, and the seconds each session's tasks took."""

    wait_for_lock = True  # another build of the project: wait for it, as a watch does

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.began: dict[str, float] = {}
        self.seconds_of: dict[str, float] = {}

    def task_started(self, name: str) -> None:
        self.began[name] = time.monotonic()

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        self._took(task.name)

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        self._took(task.name)

    def _took(self, task: str) -> None:
        began = self.began.pop(task, None)
        if began is not None:
            session = task.partition(":")[2]
            self.seconds_of[session] = self.seconds_of.get(session, 0.0) + (
                time.monotonic() - began
            )


def build_sessions(
    store: Store, paths: dict[str, Path], *, fresh: bool = False
) -> dict[str, SessionReport]:
    """Build the sessions ``paths`` names (by session name) up to their runs; their reports.

    ``fresh`` runs their ``run`` tasks whatever doit thinks of them (the model is
    asked again); a live run (``DOMARKX_LLM=live``) leaves no run behind for the
    next build to take as the recorded one.
    """
    if not paths:
        return {}
    layout = store.layout
    names = sorted(paths)
    stamp = _now()
    if fresh:
        _forget_runs(layout, names)
    reporter = TestReporter(io.StringIO(), {})
    here = os.getcwd()
    try:
        run_doit(
            SessionsLoader(layout, names, "run", reporter),
            ["run", "--continue", *(f"run:{name}" for name in names)],
        )
    finally:
        os.chdir(here)  # doit works in the project root
    if os.environ.get(REPLAY_ENV) == "live":
        _forget_runs(layout, names)
    failures: dict[str, tuple[str, str]] = {}
    for task, message in reporter.failed:
        stage, _, name = task.partition(":")
        failures.setdefault(name, (stage, message))
    reports = {}
    for name in names:
        report = _built_report(store, name, paths[name], failures.get(name))
        report.timestamp = stamp
        report.seconds = reporter.seconds_of.get(name, 0.0)
        if report.error is None and not report.outcomes and reporter.runtime_errors:
            report.error = reporter.runtime_errors[0]  # the build itself could not run
        if report.outcomes or report.error is not None:  # else: an expect fence, no checks
            reports[name] = report
    return reports


def _forget_runs(layout: Layout, names: list[str]) -> None:
    """Remove the run tasks' outputs: doit runs them again (the execution cache decides)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.abs(layout.run_out(name)))


def _built_report(
    store: Store, name: str, path: Path, failure: tuple[str, str] | None
) -> SessionReport:
    """The report of a session the build took as far as it could."""
    layout = store.layout
    report = SessionReport(session=display_path(path, store.root))
    if failure is not None and failure[0] != "run":
        report.error = failure[1]  # the document did not import: nothing ran
        return report
    try:
        snapshot_id = Path(layout.abs(layout.snapshot_out(name))).read_text().split("\n", 1)[0]
        snapshot = store.get_snapshot(snapshot_id)
        instance = build_instance(InstanceManager(store), snapshot_id, name)
        checks = TurnChecks.for_snapshot(
            snapshot,
            root=Path(store.root),
            project=load(store.root),
            cache=ReplayCache(store.replay_dir, mode="auto"),
        )
    except (OSError, DomarkxError) as err:
        report.error = failure[1] if failure is not None else str(err)
        return report
    if instance is None:
        report.error = failure[1] if failure is not None else "the session did not run"
        return report
    report.outcomes = outcomes(report.session, checks.expects, instance.conversation)
    if failure is not None and (instance.status == "failed" or not report.failed):
        report.error = failure[1]  # the run failed (not its checks)
    if report.error is not None or report.failed:
        report.instance = instance.instance_id[:12]
    return report


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat("T", "seconds")


def test_one(path: Path, *, live: bool = False) -> SessionReport:
    """The report of one document with checks, built (``live``: the model asked again)."""
    store = open_store(path)
    with environment(REPLAY_ENV, "live" if live else None):
        reports = test_sessions(store, [path], fresh=live)
    if reports:
        return reports[0]
    return SessionReport(session=display_path(path, store.root), error="it has no checks")


def session_checks(path: Path) -> list[tuple[int | None, str]]:
    """The line and label of each check of a document, in report order; nothing runs.

    With samples, the block's verdict comes after its checks (``results.outcomes``).
    A document that does not import is a ``DomarkxError``.
    """
    store = open_store(path)
    manager = SnapshotManager(store)
    expanded, _ = manager.expand(manager.parse(path), {})
    snapshot = manager.build(expanded)
    checks = TurnChecks.for_snapshot(
        snapshot,
        root=Path(store.root),
        project=load(store.root),
        cache=ReplayCache(store.replay_dir, mode="auto"),
    )
    found: list[tuple[int | None, str]] = []
    for _, expect in sorted(checks.expects.items()):
        found += [(check.line, check.label()) for check in expect.checks]
        if expect.samples > 1:
            found.append((expect.line, f"samples: {expect.samples}"))
    return found


def session_files(store: Store, paths: list[str]) -> list[Path]:
    """The session documents PATH names: files as given, folders' ``*.md`` (no partials)."""
    root = Path(store.root)
    wanted = [Path(p) for p in paths] or [root / SESSIONS_DIR]
    found: list[Path] = []
    for path in wanted:
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*.md")
                if p.is_file()
                and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder", hint="name session documents")
    return found


def has_expect_block(path: Path) -> bool:
    """A cheap look before importing: does the document hold an ``expect`` fence at all?"""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # let the import say what is wrong
    return "expect" in text and any(
        line.lstrip().startswith(("```", "~~~")) and " expect" in line for line in text.splitlines()
    )


def test_session(
    store: Store,
    path: Path,
    *,
    replay_mode: str | None = None,
    approval: Approval | None = None,
    force: bool = False,
) -> SessionReport | None:
    """Import and run one session; its checks' outcomes (None: it has no checks).

    ``force`` reports a session without checks too (as having none), for a caller
    that already chose it.
    """

    if not force and not has_expect_block(path):
        return None
    shown = display_path(path, store.root)
    report = SessionReport(session=shown, timestamp=_now())
    started = time.monotonic()
    try:
        snapshot = SnapshotManager(store).import_file(path).snapshot
        if not has_checks(snapshot.conversation):
            return report if force else None
        checks = TurnChecks.for_snapshot(
            snapshot,
            root=Path(store.root),
            project=load(store.root),
            cache=ReplayCache(store.replay_dir, mode=replay_mode),
        )
        manager = InstanceManager(store, approval=approval, replay_mode=replay_mode)
        instance = manager.create(snapshot)
        try:
            manager.execute(instance, snapshot)
        except DomarkxError as err:
            report.error = str(err)
        else:
            if instance.status == "failed" and instance.error:
                report.error = f"the run failed: {instance.error}"
        report.outcomes = outcomes(shown, checks.expects, instance.conversation)
        if report.error is None and not report.failed:
            manager.remove(instance.instance_id)  # kept only to look at a failure
        else:
            report.instance = instance.instance_id[:12]
    except DomarkxError as err:
        report.error = str(err)
    report.seconds = time.monotonic() - started
    return report


def print_report(report: SessionReport) -> None:
    for outcome in report.outcomes:
        result = outcome.result
        status = "passed" if result.passed else f"FAILED: {result.detail}"
        print(f"{outcome.where}: {result.kind}: {status}")
    if report.error is not None:
        print(f"{report.session}: could not run: {report.error}")
    elif report.instance and report.failed:
        print(f"  `domarkx export {report.instance}` shows the run")


def summary(reports: list[SessionReport]) -> int:
    checks = sum(len(r.outcomes) for r in reports)
    failed = sum(r.failed for r in reports)
    broken = sum(r.error is not None for r in reports)
    sessions = len(reports)
    line = (
        f"{checks} check{'s' * (checks != 1)} in {sessions} session{'s' * (sessions != 1)}: "
        f"{checks - failed} passed, {failed} failed"
    )
    if broken:
        line += f", {broken} session{'s' * (broken != 1)} could not run"
    if not reports:
        line = "no session has checks (```yaml expect blocks): nothing to test"
    print(line, file=sys.stdout)
    return 1 if failed or broken else 0
