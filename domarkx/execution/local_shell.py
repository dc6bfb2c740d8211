"""The local shell engine: persistent ``bash`` and ``python3`` processes on this machine.

Design (shared with the Docker engine, which imports the protocol helpers below):

- One process per language, started on the first block of that language:
  ``bash --noprofile --norc`` for ``bash``/``sh``/``shell`` and
  ``python3 -c PYTHON_DRIVER`` for ``python``. Variables, functions, the
  working directory and files persist between blocks, like a notebook kernel.
  Each language has its own process, so a ``cd`` in a bash block does not move
  the Python process.
- Each block is written to the process's stdin, and its end is marked by a
  random token (new for every process) that the process prints after the
  block: ``TOKEN:<exit status>\\n`` on stdout, ``TOKEN\\n`` on stderr. Output is
  everything before the token, byte for byte (a block need not end its output
  with a newline). Both pipes are read in one ``selectors`` loop, so a block
  that prints megabytes on both streams cannot deadlock, and nothing is
  started per block (about 0.2 ms per block; ``bench/blocks.py``).
- Shell blocks are sent as ``command eval '<block>' </dev/null``: single-quoted,
  so nothing in the block is parsed before ``eval`` sees it; ``command`` keeps
  a syntax error from ending a POSIX ``sh``; stdin is ``/dev/null`` so that a
  block reading stdin cannot swallow the next block. One wart: bash numbers
  the lines of its error messages (``bash: line 7: ...``) from the start of
  the process, not of the block; the numbers are the same on every run.
- Python blocks are sent length-prefixed to a small driver that ``exec``\\s them
  in ``__main__``'s namespace, prints tracebacks (without its own frame) to
  stderr and reports 1 on an exception, 0 otherwise. Tracebacks name the
  block ``<block-N>`` (N counts the process's blocks) and show its source
  lines. ``sys.exit(n)`` ends only the block and reports ``n``.
- ``exit N`` in a bash block (or ``set -e`` tripping) ends the bash process:
  the block reports ``N`` and the next bash block starts a fresh process, with
  its variables and working directory reset. Processes the block left in the
  background keep running until ``stop()``.
- Every process of the sandbox carries ``DOMARKX_SANDBOX=<sandbox>:<language>:<n>``
  in its environment, and each language process leads its own process group.
  A block that outlives its timeout is killed with its whole process group and
  with every process that still carries the marker (which finds descendants
  that started their own session, as Jenkins' process-tree killer does). It
  reports ``timed_out=True`` and exit code 124, like coreutils ``timeout``;
  that language's process restarts on its next block, with its state lost
  (stderr says so). A process that clears its environment *and* leaves the
  process group escapes; nothing short of a container (the Docker engine) or
  cgroup catches that.
- ``stop()`` kills every process with the sandbox's marker; ``destroy(handle)``
  does the same from another process (``domarkx stop``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Container, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.engine import BlockResult, Engine, canonical_language

# Environment variable that marks every process a sandbox starts.
MARKER_VAR = "DOMARKX_SANDBOX"
# Exit status reported for a block killed at its timeout (as coreutils `timeout`).
TIMEOUT_EXIT_CODE = 124

# The Python side of the protocol: argv[1] is the token. Everything lives inside
# one function that removes itself from __main__, so a block's globals() shows
# only what the block defined (and pickle finds classes in __main__).
PYTHON_DRIVER = r"""
def __domarkx_driver():
    import builtins, linecache, os, sys, traceback

    me = sys._getframe().f_code
    token = sys.argv[1].encode()
    sys.argv = [""]
    ctl = os.fdopen(os.dup(0), "rb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    ns = sys.modules["__main__"].__dict__
    ns["__builtins__"] = builtins
    count = 0
    while True:
        header = ctl.readline()
        if not header:
            return
        code = ctl.read(int(header)).decode("utf-8", "surrogateescape")
        count += 1
        filename = "<block-%d>" % count
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        status = 0
        try:
            exec(compile(code, filename, "exec"), ns)
        except SystemExit as exc:
            if exc.code is None:
                status = 0
            elif isinstance(exc.code, int):
                status = exc.code
            else:
                print(exc.code, file=sys.stderr)
                status = 1
        except BaseException as exc:
            status = 1
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is me:
                tb = tb.tb_next
            try:
                traceback.print_exception(type(exc), exc, tb)
            except Exception:
                pass
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(1, token + b":%d\n" % status)
        os.write(2, token + b"\n")


globals().pop("__domarkx_driver")()
"""


# --------------------------------------------------------------------------- protocol


def new_token() -> str:
    """A fresh sentinel: long and random, so no output can contain it by chance."""
    return "dmx" + secrets.token_hex(16)


def shell_payload(code: str, token: str) -> bytes:
    """The line that runs ``code`` in a persistent POSIX shell and prints the sentinels."""
    quoted = "'" + code.replace("'", "'\\''") + "'"
    line = (
        f"command eval {quoted} </dev/null; "
        f"command printf '%s:%d\\n' {token} \"$?\"; "
        f"command printf '%s\\n' {token} >&2\n"
    )
    return line.encode("utf-8", "surrogateescape")


def python_payload(code: str) -> bytes:
    """A block for ``PYTHON_DRIVER``: its length in bytes on a line, then the code."""
    data = code.encode("utf-8", "surrogateescape")
    return b"%d\n" % len(data) + data


class BlockCapture:
    """Collects one block's stdout and stderr until both sentinels have arrived.

    Bytes that follow a sentinel (a background process writing late) are kept
    in ``rest`` for the next block, where a reader of the stream would see them.
    """

    __slots__ = ("_err_scan", "_out_scan", "err", "err_done", "out", "rest", "status", "token")

    def __init__(self, token: str, pending: dict[int, bytes] | None = None) -> None:
        self.token = token.encode()
        self.out = bytearray()
        self.err = bytearray()
        self.status: int | None = None
        self.err_done = False
        self.rest: dict[int, bytes] = {1: b"", 2: b""}
        self._out_scan = 0
        self._err_scan = 0
        for stream, data in (pending or {}).items():
            if data:
                self.feed(stream, data)

    @property
    def done(self) -> bool:
        return self.status is not None and self.err_done

    def feed(self, stream: int, data: bytes) -> None:
        if stream == 1:
            if self.status is not None:
                self.rest[1] += data
                return
            self.out += data
            self._find_out()
        elif stream == 2:
            if self.err_done:
                self.rest[2] += data
                return
            self.err += data
            i = self.err.find(self.token, self._err_scan)
            if i < 0:
                self._err_scan = max(0, len(self.err) - len(self.token))
                return
            end = i + len(self.token)
            if len(self.err) <= end:  # the newline is still on its way
                self._err_scan = i
                return
            self.rest[2] = bytes(self.err[end + 1 :])
            del self.err[i:]
            self.err_done = True

    def _find_out(self) -> None:
        i = self.out.find(self.token, self._out_scan)
        if i < 0:
            self._out_scan = max(0, len(self.out) - len(self.token))
            return
        nl = self.out.find(b"\n", i)
        if nl < 0:
            self._out_scan = i
            return
        try:
            self.status = int(self.out[i + len(self.token) + 1 : nl])
        except ValueError:
            self.status = 1
        self.rest[1] = bytes(self.out[nl + 1 :])
        del self.out[i:]

    def text(self) -> tuple[str, str]:
        return (
            self.out.decode("utf-8", "replace"),
            self.err.decode("utf-8", "replace"),
        )


def timeout_note(language: str, timeout: float) -> str:
    """The line a timed-out block adds to its stderr."""
    if language == "bash":
        process, state = "shell", "variables and working directory"
    else:
        process, state = "Python process", "variables"
    return (
        f"domarkx: the block timed out after {timeout:g} s and was killed with every "
        f"process it started; the {process} restarts for the next block "
        f"(its {state} are lost)\n"
    )


def exit_status(returncode: int | None) -> int | None:
    """A shell-style status: a process killed by signal N reports 128 + N."""
    if returncode is not None and returncode < 0:
        return 128 - returncode
    return returncode


# --------------------------------------------------------------------- process kill


def pids_with_env(needle: bytes) -> list[int]:
    """Processes whose initial environment contains ``needle`` (Linux ``/proc``)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    me = os.getpid()
    found = []
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env:
            found.append(int(name))
    return found


def kill_marked(needles: Iterable[bytes], pgids: Iterable[int] = (), wait: float = 2.0) -> None:
    """SIGKILL the process groups ``pgids`` and every process carrying a needle.

    Returns once no marked process is left (a zombie has an empty environment),
    or after ``wait`` seconds.
    """
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    needles = list(needles)
    end = time.monotonic() + wait
    while True:
        pids = {pid for needle in needles for pid in pids_with_env(needle)}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > end:
            return
        time.sleep(0.005)


def marker_needle(marker: str) -> bytes:
    """The environment entry for one exact marker (entries end with NUL)."""
    return f"{MARKER_VAR}={marker}\0".encode()


def sandbox_needle(sandbox: str) -> bytes:
    """Matches every marker of one sandbox, whatever the language."""
    return f"{MARKER_VAR}={sandbox}:".encode()


# ------------------------------------------------------------------------ processes


@cache
def _bash() -> str | None:
    return shutil.which("bash")


class _LanguageProcess:
    """One persistent interpreter, its pipes, and the reading loop."""

    def __init__(
        self,
        language: str,
        executable: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        marker: str,
    ) -> None:
        self.language = language
        self.marker = marker
        self.token = new_token()
        if language == "python":
            argv = [*argv, self.token]
        self.proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**env, MARKER_VAR: marker},
            start_new_session=True,
            bufsize=0,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self._stdin = self.proc.stdin.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, 1)
        self._sel.register(self.proc.stderr.fileno(), selectors.EVENT_READ, 2)
        self._open_streams = 2
        self._pidfd: int | None = None
        # A pidfd turns readable when the process exits, even if a background
        # child still holds the pipes open; without one we poll.
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
                self._sel.register(self._pidfd, selectors.EVENT_READ, 0)
            except OSError:
                self._pidfd = None
        self.pending: dict[int, bytes] = {1: b"", 2: b""}

    def payload(self, code: str) -> bytes:
        if self.language == "python":
            return python_payload(code)
        return shell_payload(code, self.token)

    def run(self, code: str, timeout: float | None) -> tuple[BlockCapture, str]:
        """Run one block; the outcome is ``done``, ``exited`` or ``timeout``."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        capture = BlockCapture(self.token, self.pending)
        try:
            view = memoryview(self.payload(code))
            while view:
                n = os.write(self._stdin, view)
                view = view[n:]
        except BrokenPipeError:
            self.proc.wait()
            self.drain(capture)
            return capture, "exited"
        poll_slice = None if self._pidfd is not None else 0.05
        while not capture.done:
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return capture, "timeout"
            if poll_slice is not None:
                wait = poll_slice if wait is None else min(wait, poll_slice)
            exited = False
            for key, _ in self._sel.select(wait):
                if key.data == 0:
                    exited = True
                    continue
                self._read_ready(key, capture)
            if capture.done:
                break
            if exited or self._open_streams == 0 or self.proc.poll() is not None:
                self.proc.wait()
                self.drain(capture)
                if capture.done:  # it printed the sentinel, then exited
                    break
                return capture, "exited"
        self.pending = capture.rest
        return capture, "done"

    def drain(self, capture: BlockCapture, limit: float = 0.5) -> None:
        """Read what is already in the pipes, without waiting for writers to finish.

        Bounded by ``limit`` seconds: a background process may write forever.
        """
        end = time.monotonic() + limit
        while self._open_streams and time.monotonic() < end:
            events = [e for e in self._sel.select(0) if e[0].data != 0]
            if not events:
                return
            for key, _ in events:
                self._read_ready(key, capture)

    def _read_ready(self, key: selectors.SelectorKey, capture: BlockCapture) -> None:
        """Feed what one ready pipe holds to ``capture``; at end of file, stop watching it."""
        data = os.read(key.fd, 1 << 18)
        if data:
            capture.feed(key.data, data)
        else:
            self._sel.unregister(key.fd)
            self._open_streams -= 1

    def kill(self) -> None:
        """Kill this process, its process group and everything carrying its marker."""
        kill_marked([marker_needle(self.marker)], [self.proc.pid])
        self.proc.wait()

    def close(self) -> None:
        self._sel.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class LocalShellEngine(Engine):
    """Runs blocks in persistent bash and python processes in ``self.workdir``."""

    name = "local_shell"

    def __init__(
        self, config: ExecutionConfig, workdir: Path, labels: dict[str, str] | None = None
    ) -> None:
        super().__init__(config, workdir, labels)
        self.sandbox_id = secrets.token_hex(8)
        self._procs: dict[str, _LanguageProcess] = {}
        self._generation = 0
        self._started = False
        self._stopped = False
        self._spawned = False

    # -- lifecycle

    def sandbox_dir(self) -> Path:
        """Where blocks run: ``config.workdir`` relative to ``self.workdir``, or absolute."""
        if self.config.workdir:
            return self.workdir / Path(self.config.workdir).expanduser()
        return self.workdir

    def start(self) -> dict[str, Any]:
        if self._stopped:
            raise EngineError("this sandbox was stopped", hint="create a new engine to run again")
        cwd = self.sandbox_dir()
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f"cannot create the sandbox folder {cwd}: {exc.strerror}") from exc
        self._started = True
        return {"workdir": str(cwd), "pid": os.getpid(), "sandbox": self.sandbox_id}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        procs, self._procs = list(self._procs.values()), {}
        if self._spawned:
            # One pass kills every language and what earlier, restarted processes left behind.
            kill_marked([sandbox_needle(self.sandbox_id)], [p.proc.pid for p in procs])
        for p in procs:
            p.proc.wait()
            p.close()

    @classmethod
    def destroy(cls, handle: dict[str, Any]) -> None:
        sandbox = handle.get("sandbox")
        if sandbox:
            kill_marked([sandbox_needle(str(sandbox))])

    @classmethod
    def prune(cls, keep: Container[str] = frozenset(), project: str | None = None) -> list[str]:
        # Local sandboxes end with their owner (stop) or through destroy(handle).
        return []

    # -- blocks

    @classmethod
    def supports(cls, language: str) -> bool:
        lang = canonical_language(language)
        if lang == "bash":
            return _bash() is not None
        return lang == "python"

    def run(self, language: str, code: str, timeout: float | None = None) -> BlockResult:
        lang = canonical_language(language)
        if lang is None:
            raise EngineError(
                f"the {self.name} engine cannot run {language!r} blocks",
                hint="use bash, sh, shell or python, or mark the block `norun`",
            )
        if self._stopped:
            raise EngineError("this sandbox was stopped", hint="create a new engine to run again")
        if not self._started:
            self.start()
        if timeout is None:
            timeout = self.config.timeout
        start = time.monotonic()
        proc = self._process(lang)
        capture, outcome = proc.run(code, timeout)
        if outcome == "done":
            out, err = capture.text()
            return BlockResult(out, err, capture.status, time.monotonic() - start)
        # The process is gone (exit) or must go (timeout): the next block starts afresh.
        del self._procs[lang]
        if outcome == "timeout":
            proc.kill()
            proc.drain(capture)
            proc.close()
            out, err = capture.text()
            if err and not err.endswith("\n"):
                err += "\n"
            return BlockResult(
                out,
                err + timeout_note(lang, timeout),
                TIMEOUT_EXIT_CODE,
                time.monotonic() - start,
                timed_out=True,
            )
        proc.close()
        out, err = capture.text()
        return BlockResult(out, err, exit_status(proc.proc.returncode), time.monotonic() - start)

    def _process(self, lang: str) -> _LanguageProcess:
        proc = self._procs.get(lang)
        if proc is not None:
            return proc
        if lang == "bash":
            bash = _bash()
            if bash is None:
                raise EngineError("bash is not installed", hint="install bash or use python blocks")
            # argv[0] "bash" rather than its path: error messages start "bash: ...",
            # the same on every machine, so recorded outputs stay reproducible.
            executable, argv = bash, ["bash", "--noprofile", "--norc"]
        else:
            executable = sys.executable or shutil.which("python3") or "python3"
            argv = ["python3", "-c", PYTHON_DRIVER]
        self._generation += 1
        marker = f"{self.sandbox_id}:{lang}:{self._generation}"
        env = {**os.environ, **self.config.env}
        try:
            proc = _LanguageProcess(lang, executable, argv, self.sandbox_dir(), env, marker)
        except OSError as exc:
            raise EngineError(f"cannot start {executable}: {exc.strerror or exc}") from exc
        self._spawned = True
        self._procs[lang] = proc
        return proc
