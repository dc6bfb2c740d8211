"""Fixtures shared by the test modules (the helpers they use are in ``tests/support.py``).

- Every test gets a store of its own (``DOMARKX_HOME`` in a tmp folder), so no
  test writes into this repository's ``.domarkx/``.
- ``project`` builds a project folder from a dict of dedented strings (as
  cog's ``make_files``) and makes it the current folder.
- ``cli`` runs the ``domarkx`` command in this process (as its own process
  would: folder, environment, output and exit status); ``cli_process`` runs it
  in a subprocess where the process boundary matters. Both are ``support.run``.
- ``manager``: a ``SnapshotManager`` of the ``project`` folder, dates fixed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from domarkx.data.store import Store
from domarkx.session.snapshot import SnapshotManager
from tests.support import CliResult, Env, Files, PathArg, make_files, run

EPOCH = "1700000000"  # 2023-11-14: the date macro of the spec example


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow(seconds)`` first, longest first; the others in their order.

    Parallel workers take the first ones one each, then the next when they are
    free (``--dist loadgroup``), so the long tests start at once, side by side,
    and the short ones fill in around them.
    """

    def key(item: pytest.Item) -> tuple[int, float]:
        slow = item.get_closest_marker("slow")
        return (0, -float(slow.args[0])) if slow else (1, 0.0)

    items.sort(key=key)


@pytest.fixture(autouse=True)
def domarkx_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private store for every test (the ``llm`` test-suite habit)."""
    home = tmp_path_factory.mktemp("domarkx-home")
    monkeypatch.setenv("DOMARKX_HOME", str(home))
    # The user's own configuration (trusted projects) is the test's, never the machine's;
    # a test's domarkx.toml is trusted unless the test says otherwise (tests/test_trust.py).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "user-config"))
    monkeypatch.setenv("DOMARKX_TRUST", "1")
    # Builds start no build daemon (it would outlive the test); tests/test_daemon.py
    # turns it on, with a folder of its own for the daemon's socket.
    monkeypatch.setenv("DOMARKX_DAEMON", "0")
    return home


class Project(Protocol):
    def __call__(self, files: Files | None = None) -> Path: ...


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """``project({"sessions/a.md": "..."})``: a project folder, now the current folder.

    The folder has ``sessions/`` (what marks a project root) and its store is
    its own ``.domarkx/``. Call it again to add files; it returns the root.
    """
    root = tmp_path / "project"
    (root / "sessions").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DOMARKX_HOME", str(root / ".domarkx"))

    def make(files: Files | None = None) -> Path:
        make_files(files or {}, root)
        return root

    return make


@pytest.fixture
def manager(project: Project, monkeypatch: pytest.MonkeyPatch) -> SnapshotManager:
    """The snapshot manager of a new ``project`` (``SOURCE_DATE_EPOCH`` fixed)."""
    root = project()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    return SnapshotManager(Store(root / ".domarkx", root))


Cli = Callable[..., CliResult]


def _cli(process: bool) -> Cli:
    def call(
        *args: PathArg, env: Env | None = None, cwd: PathArg | None = None, timeout: float = 120
    ) -> CliResult:
        return run(cwd or os.getcwd(), "domarkx", *args, env=env, process=process, timeout=timeout)

    return call


@pytest.fixture
def cli() -> Cli:
    """``cli("import", "sessions/a.md")``: run ``domarkx`` in the current folder, in process.

    ``env`` adds variables (a value of None removes one; ``PYTHONPATH`` also
    goes on ``sys.path``, which is how a plugin distribution is installed);
    ``cwd`` runs elsewhere. Use ``cli_process`` where a real process boundary
    is what the test is about (signals, the console script, standard input).
    """
    return _cli(process=False)


@pytest.fixture
def cli_process() -> Cli:
    """``cli_process("import", "sessions/a.md")``: ``python -m domarkx`` in a subprocess.

    ``env`` adds variables (a value of None removes one); ``cwd`` runs elsewhere;
    ``timeout`` bounds it. The environment is ``support.process_env(env)``.
    """
    return _cli(process=True)
