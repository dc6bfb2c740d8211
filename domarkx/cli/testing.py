"""What ``domarkx test`` and the pytest plugin share: find, run and report sessions with checks.

Each session document with an ``expect`` block is imported and run; its
checks' outcomes (``checks.results.Outcome``) are read from the run's
conversation and printed one line each, then a summary.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from domarkx.checks.junit import SessionReport, write
from domarkx.checks.results import outcomes
from domarkx.checks.turns import TurnChecks, has_checks
from domarkx.cli.options import Args, open_store
from domarkx.config import load
from domarkx.data.layout import SESSIONS_DIR
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, UsageError
from domarkx.llm.replay import ReplayCache
from domarkx.session.approval import Approval, for_project
from domarkx.session.instance import InstanceManager
from domarkx.session.names import display_path
from domarkx.session.snapshot import SnapshotManager


def run(args: Args) -> int:
    """``domarkx test``: each session's lines, the summary, the JUnit file; the exit status."""
    store = open_store()
    mode = "record" if args.record else "live" if args.live else None
    approval = for_project(store.root, yes=args.yes)
    reports = []
    for path in session_files(store, args.paths):
        report = test_session(store, path, replay_mode=mode, approval=approval)
        if report is None:
            continue
        reports.append(report)
        print_report(report)
    if args.junit:
        write(Path(args.junit), reports)
    return summary(reports)


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
    report = SessionReport(
        session=shown, timestamp=datetime.now(UTC).replace(tzinfo=None).isoformat("T", "seconds")
    )
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
