"""Fixtures shared by the test modules.

- Every test gets a store of its own (``DOMARKX_HOME`` in a tmp folder), so no
  test writes into this repository's ``.domarkx/``.
- ``project`` builds a project folder from a dict of dedented strings (as
  cog's ``make_files``) and makes it the current folder.
- ``cli`` runs the ``domarkx`` command in this process (``main(argv)``, as
  its own process would: folder, environment, output and exit status);
  ``cli_process`` runs it in a subprocess where the process boundary matters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from domarkx import registry

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


Env = Mapping[str, "str | None"]


def _pythonpath(env: Env | None) -> list[str]:
    value = (env or {}).get("PYTHONPATH") or ""
    return [p for p in value.split(os.pathsep) if p]


@contextlib.contextmanager
def as_own_process(cwd: str | os.PathLike[str] | None, env: Env | None) -> Iterator[None]:
    """What a process of its own would give a call: folder, environment, import path.

    Everything a command may change in the interpreter is put back afterwards:
    the current folder (doit changes into the project root), the environment,
    ``sys.path`` and the modules imported from the ``PYTHONPATH`` it was given
    (a plugin distribution), the ``dodo`` module doit imports, and signal handlers.
    """
    saved_cwd = os.getcwd()
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    saved_handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    extra = [os.path.abspath(p) for p in _pythonpath(env)]
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    sys.path[:0] = extra
    sys.modules.pop("dodo", None)
    registry.refresh()  # the installed plugins may differ
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if name == "dodo" or any(origin.startswith(p + os.sep) for p in extra):
                del sys.modules[name]
        registry.refresh()
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _exit_status(call: Callable[[], object]) -> int:
    """Run ``call`` as ``python -m`` would: its status, SystemExit's, or 1 after a traceback."""
    try:
        return int(call() or 0)  # type: ignore[call-overload]
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Capture file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr`` on them).

    The list it gives holds ``[out, err]`` once the block has ended. Reading at
    the descriptor level means what child processes print counts too.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    result: list[str] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved_fds = os.dup(1), os.dup(2)
        saved_streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        try:
            yield result
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(ValueError, OSError):  # closed by the command
                    stream.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
            for handle in (out, err):
                handle.seek(0)
                result.append(handle.read().decode("utf-8", errors="replace"))


def run_in_process(
    entry: Callable[[list[str]], object],
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Env | None = None,
) -> CliResult:
    """One command's exit status and output, run in this interpreter.

    No process start-up; the command gets its own folder and environment
    (see ``as_own_process``) and its output is read as a process's would be.
    """
    with captured_output() as output, as_own_process(cwd, env):
        code = _exit_status(lambda: entry([str(a) for a in argv]))
    return CliResult(code, *output)


def domarkx_main(argv: list[str]) -> object:
    from domarkx.cli.main import main

    return main(argv)


def doit_main(argv: list[str]) -> object:
    """``doit ARGV`` as the ``doit`` command runs it (the dodo.py of the current folder)."""
    from doit.doit_cmd import DoitMain

    return DoitMain().run(argv)


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """``cli("import", "sessions/a.md")``: run ``domarkx`` in the current folder, in process.

    ``env`` adds variables (a value of None removes one; ``PYTHONPATH`` also
    goes on ``sys.path``, which is how a plugin distribution is installed);
    ``cwd`` runs elsewhere. Use ``cli_process`` where a real process boundary
    is what the test is about (signals, the console script, standard input).
    """

    def run(
        *args: str | os.PathLike[str],
        env: Env | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 120,  # accepted for the same signature as cli_process
    ) -> CliResult:
        return run_in_process(domarkx_main, args, cwd=cwd, env=env)

    return run


@pytest.fixture
def cli_process() -> Callable[..., CliResult]:
    """``cli_process("import", "sessions/a.md")``: run ``python -m domarkx`` in a subprocess.

    ``env`` adds variables (a value of None removes one); ``cwd`` runs elsewhere.
    This checkout goes on ``PYTHONPATH`` (ahead of site-packages), so the code
    under test is what runs even when another domarkx is installed.
    """

    def run(
        *args: str | os.PathLike[str],
        env: Env | None = None,
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
