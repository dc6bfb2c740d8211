"""``domarkx test [PATH]...``: run the sessions that have checks and report each check.

Each session document with an ``expect`` block is imported and run (the
model's replies replayed from ``.domarkx/replay/`` as in a build, unless
``--live``); one line per check says the session, the ``file:line`` of the
check, its kind and whether it passed or why not; then a summary. Exit
status 1 when a check failed or a session could not run. ``--junit FILE``
writes JUnit XML for CI.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx.cli.options import Args, Subparsers, add_command

if TYPE_CHECKING:
    from domarkx.checks.junit import SessionReport
    from domarkx.data.store import Store
    from domarkx.session.approval import Approval


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "test",
        run,
        help="run the sessions that have checks (expect blocks) and report each check",
        description="Import and run every session under PATH (default: sessions/) that has an "
        "expect block, print one line per check and a summary; exit 1 when any failed. Model "
        "replies are replayed from .domarkx/replay/ (DOMARKX_LLM applies) unless --live.",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="session documents or folders (default: sessions/)"
    )
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    parser.add_argument(
        "--live",
        action="store_true",
        help="ask the model again instead of replaying; keeps no record unless --record",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="ask the model again and keep its replies as the new replay records",
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="run model-written code on this machine without asking (local_shell)",
    )


def run(args: Args) -> int:
    from domarkx.cli.options import open_store
    from domarkx.session.approval import for_project

    store = open_store()
    mode = "record" if args.record else "live" if args.live else None
    files = session_files(store, args.paths)
    approval = for_project(store.root, yes=args.yes)
    reports = []
    for path in files:
        report = test_session(store, path, replay_mode=mode, approval=approval)
        if report is None:
            continue
        reports.append(report)
        print_report(report)
    if args.junit:
        from domarkx.checks.junit import write

        write(Path(args.junit), reports)
    return summary(reports)


def session_files(store: Store, paths: list[str]) -> list[Path]:
    """The session documents PATH names: files as given, folders' ``*.md`` (no partials)."""
    from domarkx.data.layout import SESSIONS_DIR
    from domarkx.errors import UsageError

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
    from domarkx.checks.junit import SessionReport
    from domarkx.checks.results import outcomes
    from domarkx.checks.turns import TurnChecks, has_checks
    from domarkx.config import load
    from domarkx.errors import DomarkxError
    from domarkx.llm.replay import ReplayCache
    from domarkx.session.instance import InstanceManager
    from domarkx.session.names import display_path
    from domarkx.session.snapshot import SnapshotManager

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
