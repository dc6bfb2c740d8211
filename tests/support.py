"""What the tests share: one way to run a command, one environment, one project builder.

- ``make_files(files, base)``: a folder from a dict of dedented strings (as
  cog's ``make_files``); ``new_project(root, files)`` adds ``sessions/`` and a
  one-line ``dodo.py``; ``session(...)`` is a small document.
- ``run(cwd, "domarkx" | "doit", *args)``: one command's exit status and
  output. In this interpreter by default (its own folder, environment and
  output, see ``as_own_process``); ``process=True`` runs a real process where
  the process boundary is what a test is about (a lock held by another
  process, signals, a terminal). ``domarkx(root, ...)`` and ``doit(root, ...)``
  run in a project with its own store (``root/.domarkx``).
- ``process_env(extra)``: the environment of every process a test starts:
  this one's, with this checkout first on ``PYTHONPATH`` (the code under test
  runs even when another domarkx is installed); a value of None removes a
  variable. ``spawn(cwd, program, *args)`` starts a command and returns at once.
- Waiting (``wait_for``), a ``domarkx watch`` process (``WatchProcess``), an
  editor's save (``save``), doit's saved state (``saved_state``), the pieces
  of generated documents and the round trip of a document.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from doit.dependency import JSONCodec
from hypothesis import strategies as st

from domarkx import registry
from domarkx.data.models import SessionSnapshot
from domarkx.pipeline.db import JournalDB
from domarkx.session.export import render
from domarkx.session.snapshot import SnapshotManager

REPO_ROOT = Path(__file__).resolve().parent.parent

Files = Mapping[str, "str | bytes | Files"]
Env = Mapping[str, "str | None"]
PathArg = str | os.PathLike[str]


# Projects -------------------------------------------------------------------------


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


DODO = "from domarkx.pipeline.tasks import *  # noqa: F403\n"


def new_project(root: Path, files: Files, *, dodo: bool = True) -> Path:
    """A project folder: ``sessions/``, a one-line ``dodo.py`` (unless ``dodo=False``), ``files``."""
    make_files({**({"dodo.py": DODO} if dodo else {}), "sessions": {}, **files}, root)
    return root


def session(user: str, code: str | None = None, extra: str = "") -> str:
    """A small session document: a user question, an assistant answer with ``code``."""
    text = f"---\ntitle: test\n---\n\n## user\n\n{user}\n{extra}\n## assistant\n\nHere.\n"
    if code is not None:
        text += f"\n```python\n{code}\n```\n"
    return text


def local_session(code: str) -> str:
    """An assistant message with one ``sh`` block, run by the local engine."""
    return f"## assistant\n\n```sh\n{code}\n```\n"


# A project whose sessions tests edit: a plain one, one with code, one that includes
# a partial, one in a folder (builds with and without workers are compared on it).
EDITED: Files = {
    "sessions/_common.md": "Common words.\n",
    "sessions/plain.md": session("A plain question"),
    "sessions/code.md": session("Print it", "print(6 * 7)"),
    "sessions/includes.md": session("Q", extra="[@c](domarkx://include?path=_common.md)"),
    "sessions/deep/other.md": session("Another question"),
}


def stage_tasks(
    *names: str, stages: Sequence[str] = ("parse", "expand", "snapshot", "run", "export")
) -> set[str]:
    """The names of the doit tasks of ``names`` at each of ``stages``."""
    return {f"{stage}:{name}" for stage in stages for name in names}


def output_of(export: str) -> str:
    """The text of the first output block of an export."""
    match = re.search(r"```text output[^\n]*\n(.*?)```", export, re.S)
    assert match, export
    return match.group(1)


# Running a command ----------------------------------------------------------------


class CliResult(NamedTuple):
    """What one run of a command gave: ``code, out, err = run(...)``."""

    code: int
    out: str
    err: str

    @property
    def executed(self) -> set[str]:
        """The tasks doit ran (its ``.  name`` lines)."""
        return {line[3:] for line in self.out.splitlines() if line.startswith(".  ")}


def process_env(extra: Env | None = None) -> dict[str, str]:
    """This process's environment, this checkout first on ``PYTHONPATH``, then ``extra``.

    A value of None in ``extra`` removes that variable. A ``PYTHONPATH`` in
    ``extra`` (a plugin distribution) goes after this checkout.
    """
    env = dict(os.environ)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    return env


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _pythonpath(env: Env | None) -> list[str]:
    value = (env or {}).get("PYTHONPATH") or ""
    return [p for p in value.split(os.pathsep) if p]


@contextlib.contextmanager
def as_own_process(cwd: PathArg | None, env: Env | None) -> Iterator[None]:
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


def _exit_status(call: Callable[[], object]) -> int:
    """Run ``call`` as ``python -m`` would: its status, SystemExit's, or 1 after a traceback."""
    try:
        status = call()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return int(status) if isinstance(status, int) else 0


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


def domarkx_main(argv: list[str]) -> object:
    """``domarkx ARGV`` as its console script runs it."""
    from domarkx.cli.main import main  # imported per call: as_own_process refreshes plugins first

    return main(argv)


def doit_main(argv: list[str]) -> object:
    """``doit ARGV`` as the ``doit`` command runs it (the dodo.py of the current folder)."""
    from doit.doit_cmd import DoitMain  # imported per call, as domarkx_main

    return DoitMain().run(argv)


MAINS: dict[str, Callable[[list[str]], object]] = {"domarkx": domarkx_main, "doit": doit_main}


def run_in_process(
    entry: Callable[[list[str]], object],
    argv: Sequence[PathArg],
    *,
    cwd: PathArg | None = None,
    env: Env | None = None,
) -> CliResult:
    """One command's exit status and output, run in this interpreter.

    No process start-up; the command gets its own folder and environment
    (see ``as_own_process``) and its output is read as a process's would be.
    """
    with captured_output() as output, as_own_process(cwd, env):
        code = _exit_status(lambda: entry([str(a) for a in argv]))
    return CliResult(code, output[0], output[1])


def run(
    cwd: PathArg,
    program: str,
    *args: PathArg,
    env: Env | None = None,
    process: bool = False,
    timeout: float = 120,
) -> CliResult:
    """``program ARGS`` (``"domarkx"`` or ``"doit"``) in ``cwd``: its exit status and output.

    In this interpreter unless ``process`` asks for a real one (``python -m
    program`` with ``process_env(env)``); ``timeout`` bounds a real process.
    """
    if not process:
        return run_in_process(MAINS[program], args, cwd=cwd, env=env)
    done = subprocess.run(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=cwd,
        env=process_env(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


# What a project's commands are given: no DOMARKX_HOME, so the store is the project's .domarkx/.
OWN_STORE: Mapping[str, str | None] = {"DOMARKX_HOME": None}


def _own_store(env: Env | None) -> dict[str, str | None]:
    return {**OWN_STORE, **(env or {})}


def domarkx(
    root: Path, *args: PathArg, env: Env | None = None, process: bool = False, timeout: float = 120
) -> CliResult:
    """``domarkx ARGS`` in the project ``root``, with its own store."""
    return run(root, "domarkx", *args, env=_own_store(env), process=process, timeout=timeout)


def doit(
    root: Path, *args: PathArg, env: Env | None = None, process: bool = False, timeout: float = 120
) -> CliResult:
    """``doit ARGS`` in the project ``root``, with its own store."""
    return run(root, "doit", *args, env=_own_store(env), process=process, timeout=timeout)


def spawn(
    cwd: PathArg,
    program: str,
    *args: PathArg,
    env: Env | None = None,
    stdout: int | IO[str] | None = subprocess.PIPE,
    stderr: int | IO[str] | None = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``python -m program ARGS`` in ``cwd`` and return at once (``process_env(env)``).

    A project's commands get its own store with ``env=OWN_STORE``;
    ``stderr=subprocess.STDOUT`` merges the two streams.
    """
    return subprocess.Popen(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=cwd,
        env=process_env(env),
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


# Processes ------------------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Waiting and watching -------------------------------------------------------------


def wait_for(predicate: Callable[[], object], within: float = 30.0) -> bool:
    """Whether ``predicate()`` became true within ``within`` seconds (polled every 0.1 s)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class WatchProcess:
    """``domarkx watch`` in a subprocess of the project ``root``, its output read on a thread."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.proc = spawn(root, "domarkx", "watch", *args, env=OWN_STORE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str, timeout: float = 30) -> str:
        """The next line containing ``text`` (lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def save(path: Path, text: str) -> None:
    """Write as editors do: a temporary file, then a rename over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def saved_state(root: Path) -> dict[str, dict[str, object]]:
    """doit's state as the next build reads it: the file and the journal of finished tasks."""
    tasks: dict[str, dict[str, object]] = JournalDB(
        str(root / ".domarkx" / "doit.json"), JSONCodec()
    ).tasks()
    return tasks


# Documents ------------------------------------------------------------------------


def import_text(manager: SnapshotManager, text: str, name: str = "doc") -> SessionSnapshot:
    """Import ``text`` as ``sessions/<name>.md`` (parse, expand, build; nothing stored)."""
    path = manager.store.root / "sessions" / f"{name}.md"
    path.write_bytes(text.encode("utf-8"))
    expanded, _ = manager.expand(manager.parse(path))
    return manager.build(expanded)


def assert_round_trip(manager: SnapshotManager, snapshot: SessionSnapshot) -> str:
    """import(export(S)) is S, and exporting it again gives the same bytes: the export."""
    exported = render(snapshot)
    again = import_text(manager, exported, "exported")
    assert again.content_dict() == snapshot.content_dict()
    assert again.snapshot_id == snapshot.snapshot_id
    assert render(again) == exported
    return exported


# Lines and pieces a careless user (or a model) writes.
LINES = st.sampled_from(
    [
        *["", "", "", " ", "\t", "para text", "Para two", "  indented 2", "    indented 4"],
        *["## user", "## assistant", "##  tool  ##", "## &#117;ser", "### three", "#", "# one"],
        *["user", "---", "***", "===", "- - -", "  ---", "___", "--", "  ="],
        *["```", "```bash", "````", "~~~", "~~~ info `x`", "   ```sh", "    ```", "``` a ``` b"],
        *["```text output", "```json msg-metadata", "{}", "```yaml session-config", "x: 1"],
        *["```'' setup-script", "```python name='a b.py' run", "```sh 'odd'=v 'a=b'"],
        *["> quote", ">", "> > nested", ">no space", "   > q", "> ```", "> - item", ">\tq"],
        *["- item", "* item", "+ item", "1. one", "1) one", "2. two", "-", "  - nested"],
        *["   continued", "      deep", "  ```", "  code in item"],
        *["| a | b |", "|---|---|", "<div>", "</div>", "<!-- c -->", "<!--", "-->", "<pre>"],
        *["[a]: https://x", "[x] not a definition", "\\## escaped", "a\\", "text `code`"],
        *["[@p](domarkx://p)", "\\[@p](domarkx://p)", "![@p](domarkx://p)", "[@o](domarkx://o)"],
        *["](domarkx://p)", "[@d](domarkx://date)", "`[@p](domarkx://p)`", "[@"],
        *["form\x0cfeed", "a\u2028b", "caf\u00e9", "tab\tinside"],
    ]
)
# Front matter, well-formed or not, with parameters that look like Markdown.
FRONT = st.sampled_from(
    [
        "",
        '---\nparams:\n  p: "value"\n  o: "[@y"\n---\n',
        '---\nparams:\n  p: "> quoted"\n  o: ""\n---\n',
        '---\nparams:\n  p: "```sh\\nls"\n  o: "x"\n---\n',
        "\n---\n",
        "---\ntitle: t\n---\n\n",
    ]
)
