"""A pytest plugin: a project's session checks beside its own tests.

``pytest --domarkx sessions/`` (or ``domarkx_paths = sessions`` in the
project's pytest configuration) collects each session document that has an
``expect`` block as a collector node (a ``pytest.File``, as pytest's guide to
non-Python tests does it), and each of its checks as a test item under it:
``sessions/add.md::line 19: contains: 4``. So ``-k`` selects checks by kind
or text, and ``--junitxml`` writes one test case per check.

Collecting imports the document (nothing runs); the first of a session's
items that runs builds the session as ``domarkx test`` does (``testing``: the
build's task graph and caches), and each item reports its check's result. A
document that does not import is one item, ``import``, that fails with the
error. Registered as the ``pytest11`` entry point ``domarkx``.

Only pytest's documented hooks and classes are used: ``pytest_addoption``,
``pytest_configure`` (the paths join ``config.args``, what pytest collects),
``pytest_collect_file``, ``pytest.File`` and ``pytest.Item``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from domarkx.checks.junit import SessionReport


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


# The config's session paths (absolute), set by pytest_configure.
_PATHS = pytest.StashKey[list[Path]]()


def pytest_configure(config: pytest.Config) -> None:
    here = Path(config.invocation_params.dir)
    given = [(here / p).resolve() for p in config.getoption("domarkx") or []]
    configured = [(Path(config.rootpath) / p).resolve() for p in config.getini("domarkx_paths")]
    config.stash[_PATHS] = given + configured
    # What pytest collects: --domarkx paths always; the configured ones, as testpaths,
    # when the command line names no file or folder (pytest drops a path met twice).
    named = config.args_source == pytest.Config.ArgsSource.ARGS
    for path in given + ([] if named else configured):
        if str(path) not in config.args:
            config.args.append(str(path))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> SessionFile | None:
    paths = parent.config.stash.get(_PATHS, [])
    if file_path.suffix != ".md" or not paths:
        return None
    resolved = file_path.resolve()
    inside = [p for p in paths if resolved == p or resolved.is_relative_to(p)]
    if not inside:
        return None
    base = inside[0]
    if resolved != base and any(
        part.startswith(("_", ".")) for part in resolved.relative_to(base).parts
    ):
        return None  # a partial (`_*`) or hidden file: included by sessions, not one
    # reason: pytest loads this plugin in every run; the session stack only for --domarkx
    from domarkx.cli import testing

    if not testing.has_expect_block(file_path):
        return None
    found: SessionFile = SessionFile.from_parent(parent, path=file_path)
    return found


class ChecksFailed(Exception):
    """A check failed, or its session could not run: the line that says which."""


class SessionFile(pytest.File):
    """One session document with checks: its checks are the items."""

    report: SessionReport | None = None

    def collect(self) -> Iterator[pytest.Item]:
        # reason: pytest loads this plugin in every run; the session stack only for --domarkx
        from domarkx.cli import testing
        from domarkx.errors import DomarkxError  # reason: (as above)

        try:
            checks = testing.session_checks(self.path)
        except DomarkxError as err:
            yield CheckItem.from_parent(self, name="import", index=-1, line=None, error=str(err))
            return
        for index, (line, label) in enumerate(checks):
            name = f"line {line}: {label}" if line else label
            yield CheckItem.from_parent(self, name=name, index=index, line=line)

    def setup(self) -> None:
        """Build the session once, before the first of its checks reports."""
        # reason: pytest loads this plugin in every run; the session stack only for --domarkx
        from domarkx.cli import testing

        live = bool(self.config.getoption("domarkx_live"))
        self.report = testing.test_one(self.path, live=live)


class CheckItem(pytest.Item):
    """One check of a session: passes when the session's run passed it."""

    def __init__(
        self,
        *,
        index: int,
        line: int | None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.line = line
        self.error = error

    def runtest(self) -> None:
        if self.error is not None:  # the document did not import
            raise ChecksFailed(self.error)
        parent = self.parent
        assert isinstance(parent, SessionFile) and parent.report is not None
        report = parent.report
        outcome = report.outcomes[self.index] if self.index < len(report.outcomes) else None
        if outcome is not None:
            self.user_properties.append(("check", f"{outcome.where}: {outcome.label}"))
            self.user_properties.append(("detail", outcome.result.detail))
        if report.error is not None and (outcome is None or not outcome.result.passed):
            raise ChecksFailed(f"{report.session}: could not run: {report.error}")
        if outcome is None:
            raise ChecksFailed(f"{report.session}: the check was not run")
        if not outcome.result.passed:
            shown = f"\n  `domarkx export {report.instance}` shows the run" * bool(report.instance)
            raise ChecksFailed(
                f"{outcome.where}: {outcome.result.kind}: FAILED: {outcome.result.detail}{shown}"
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ChecksFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.line - 1 if self.line else None
        return self.path, line, f"domarkx: {self.name}"
