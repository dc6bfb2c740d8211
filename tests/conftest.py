"""Fixtures shared by the test modules.

- Every test gets a store of its own (``DOMARKX_HOME`` in a tmp folder), so no
  test writes into this repository's ``.domarkx/``.
- ``project`` builds a project folder from a dict of dedented strings (as
  cog's ``make_files``) and makes it the current folder.
- ``cli`` runs the real ``domarkx`` command in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

Files = Mapping[str, "str | bytes | Files"]


def make_files(files: Files, base: Path) -> None:
    """Write ``files`` under ``base``: a dict value is a folder, bytes are written as they are.

    Strings are dedented (start them with ``\"\"\"\\`` so that line 1 is the
    document's first line: front matter must be there).
    """
    for name, content in files.items():
        path = base / name
        if isinstance(content, Mapping):
            path.mkdir(parents=True, exist_ok=True)
            make_files(content, path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")


@pytest.fixture(autouse=True)
def domarkx_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private store for every test (the ``llm`` test-suite habit)."""
    home = tmp_path_factory.mktemp("domarkx-home")
    monkeypatch.setenv("DOMARKX_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
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


class CliResult(NamedTuple):
    """What one run of the command gave: ``code, out, err = cli(...)``."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """``cli("import", "sessions/a.md")``: run ``python -m domarkx`` in the current folder.

    ``env`` adds variables (a value of None removes one); ``cwd`` runs elsewhere.
    This checkout goes on ``PYTHONPATH`` (ahead of site-packages), so the code
    under test is what runs even when another domarkx is installed.
    """

    def run(
        *args: str | os.PathLike[str],
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 120,
    ) -> CliResult:
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        paths = [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
        full_env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
        done = subprocess.run(
            [sys.executable, "-m", "domarkx", *map(str, args)],
            cwd=cwd or os.getcwd(),
            env=full_env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run
