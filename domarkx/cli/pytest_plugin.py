"""A pytest plugin: a project's session checks beside its own tests.

``pytest --domarkx sessions/`` (or ``domarkx_paths = sessions`` in the
project's pytest configuration) collects each session document that has an
``expect`` block as one test item, which imports and runs the session as
``domarkx test`` does. Each check is reported as a sub-result (pytest's
subtest reports, ``SUBPASSED``/``SUBFAILED``, on pytest 9 and later; on
older versions, a section of the item's report); the item fails when a
check fails or the session cannot run. Registered as the ``pytest11``
entry point ``domarkx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("domarkx", "domarkx session checks")
    group.addoption(
        "--domarkx",
        action="append",
        default=[],
        metavar="PATH",
        help="collect the domarkx sessions with checks under PATH (a file or a folder)",
    )
    group.addoption(
        "--domarkx-live",
        action="store_true",
        help="ask the model again instead of replaying (keeps no record)",
    )
    parser.addini(
        "domarkx_paths", type="args", default=[], help="domarkx session documents or folders"
    )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    here = Path(config.invocation_params.dir)
    paths = [here / p for p in config.getoption("domarkx") or []]
    paths += [Path(config.rootpath) / p for p in config.getini("domarkx_paths") or []]
    if not paths:
        return
    # reason: pytest loads this plugin in every run; the session stack only for --domarkx
    from domarkx.cli import testing
    from domarkx.data.store import Store  # reason: (as above)

    store = Store.discover(Path(config.rootpath))
    seen: set[Path] = set()
    for path in testing.session_files(store, [str(p) for p in paths]):
        path = path.resolve()
        if path in seen or not testing.has_expect_block(path):
            continue
        seen.add(path)
        name = (
            path.relative_to(config.rootpath).as_posix()
            if path.is_relative_to(config.rootpath)
            else str(path)
        )
        items.append(SessionItem.from_parent(session, name=name, path=path, nodeid=name))


class ChecksFailed(Exception):
    """A session's checks failed or it could not run: the lines that say which."""


class SessionItem(pytest.Item):
    """One session document with checks."""

    def runtest(self) -> None:
        # reason: pytest loads this plugin in every run; the session stack only for --domarkx
        from domarkx.cli import testing
        from domarkx.data.store import Store  # reason: (as above)

        store = Store.discover(self.path.parent)
        live = self.config.getoption("domarkx_live")
        report = testing.test_session(
            store, self.path, replay_mode="live" if live else None, force=True
        )
        assert report is not None
        for outcome in report.outcomes:
            self.user_properties.append((f"{outcome.where} {outcome.label}", outcome.result.detail))
        lines = [
            f"{o.where}: {o.result.kind}: "
            + ("passed" if o.result.passed else f"FAILED: {o.result.detail}")
            for o in report.outcomes
        ]
        self.add_report_section("call", "domarkx checks", "\n".join(lines))
        _sub_results(self, report)
        problems = [line for line in lines if ": FAILED: " in line]
        if report.error is not None:
            problems.append(f"{report.session}: could not run: {report.error}")
        if problems:
            raise ChecksFailed("\n".join(problems))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ChecksFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"domarkx: {self.name}"


def _sub_results(item: SessionItem, report: Any) -> None:
    """Each check as a subtest report, where this pytest has them (9 and later)."""
    try:
        from _pytest.subtests import SubtestContext  # reason: pytest >= 9 only
    except ImportError:
        return
    for outcome in report.outcomes:

        def check(outcome: Any = outcome) -> None:
            if not outcome.result.passed:
                raise ChecksFailed(
                    f"{outcome.where}: {outcome.result.kind}: {outcome.result.detail}"
                )

        call = pytest.CallInfo.from_call(check, when="call")
        made = item.ihook.pytest_runtest_makereport(item=item, call=call)
        sub = pytest.SubtestReport._new(
            made, SubtestContext(msg=f"{outcome.where} {outcome.label}", kwargs={}), None, None
        )
        item.ihook.pytest_runtest_logreport(report=sub)
