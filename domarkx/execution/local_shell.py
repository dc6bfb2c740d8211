"""The local shell engine: persistent ``bash`` and ``python3`` processes on this machine.

Blocks are run through the block protocol both engines speak
(``domarkx.execution.protocol``). What is particular to this machine:

- ``bash --noprofile --norc`` runs shell blocks and ``python3 -c
  PYTHON_DRIVER`` Python blocks, each language in its own process, so a ``cd``
  in a bash block does not move the Python process. Both pipes are read in one
  ``selectors`` loop, so a block that prints megabytes on both streams cannot
  deadlock, and nothing is started per block (about 0.2 ms per block;
  ``bench/blocks.py``). One wart: bash numbers the lines of its error messages
  (``bash: line 7: ...``) from the start of the process, not of the block; the
  numbers are the same on every run.
- ``exit N`` in a bash block (or ``set -e`` tripping) ends the bash process:
  the block reports ``N`` and the next bash block starts a fresh process, with
  its variables and working directory reset. Processes the block left in the
  background keep running until ``stop()``.
- Every process of the sandbox carries ``DOMARKX_SANDBOX=<sandbox>:<language>:<n>``
  in its environment, and each language process leads its own process group.
  A block that outlives its timeout is killed with its whole process group and
  with every process that still carries the marker (which finds descendants
  that started their own session, as Jenkins' process-tree killer does); that
  language's process restarts on its next block, with its state lost (stderr
  says so). A process that clears its environment *and* leaves the process
  group escapes; nothing short of a container (the Docker engine) or cgroup
  catches that.
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

from domarkx.data.layer_files import missing_objects, restore_tree, save_tree
from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.engine import BlockResult, Engine, block_language, canonical_language
from domarkx.execution.protocol import (
    MARKER_VAR,
    PYTHON_DRIVER,
    BlockCapture,
    new_token,
    python_payload,
    shell_payload,
    timed_out_result,
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
        self.blocks = 0  # the session's blocks this process ran (not domarkx's own)

    def payload(self, code: str, count: int | None = None) -> bytes:
        if self.language == "python":
            return python_payload(code, count)
        return shell_payload(code, self.token)

    def run(
        self, code: str, timeout: float | None, internal: bool = False, count: int | None = None
    ) -> tuple[BlockCapture, str]:
        """Run one block; the outcome is ``done``, ``exited`` or ``timeout``.

        ``internal``: domarkx's own block (a layer's save or restore), not counted.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        capture = BlockCapture(self.token, self.pending)
        if internal and self.language == "python":
            count = self.blocks if count is None else count
        elif not internal:
            self.blocks += 1
        if count is not None:
            self.blocks = count
        try:
            view = memoryview(self.payload(code, count if internal else None))
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
        # Layers: the files to start from (use_files), and the digests of files already
        # in the store by (path, size, mtime, inode), so a save hashes only what changed.
        self._base_files: tuple[dict[str, Any], Path] | None = None
        self._hashes: dict[str, tuple[tuple[int, int, int], str]] = {}

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
        if self._base_files is not None and not self._started:
            files, objects = self._base_files
            restore_tree(files.get("tree") or [], objects, self.workdir, self._hashes)
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
        return self._run(language, code, timeout)

    def run_internal(
        self, language: str, code: str, timeout: float, count: int | None = None
    ) -> BlockResult:
        return self._run(language, code, timeout, internal=True, count=count)

    def _run(
        self,
        language: str,
        code: str,
        timeout: float | None,
        internal: bool = False,
        count: int | None = None,
    ) -> BlockResult:
        lang = block_language(self.name, language)
        if self._stopped:
            raise EngineError("this sandbox was stopped", hint="create a new engine to run again")
        if not self._started:
            self.start()
        if timeout is None:
            timeout = self.config.timeout
        start = time.monotonic()
        proc = self._process(lang)
        capture, outcome = proc.run(code, timeout, internal, count)
        if outcome == "done":
            out, err = capture.text()
            return BlockResult(out, err, capture.status, time.monotonic() - start)
        # The process is gone (exit) or must go (timeout): the next block starts afresh.
        del self._procs[lang]
        if outcome == "timeout":
            proc.kill()
            proc.drain(capture)
            proc.close()
            return timed_out_result(capture, lang, timeout, start)
        proc.close()
        out, err = capture.text()
        return BlockResult(out, err, exit_status(proc.proc.returncode), time.monotonic() - start)

    # -- layers (domarkx.session.layers)

    layers_supported = True

    def state_root(self) -> str | None:
        return str(self.workdir)

    def live_languages(self) -> list[str]:
        return [lang for lang, p in self._procs.items() if p.proc.poll() is None]

    def python_blocks(self) -> int:
        proc = self._procs.get("python")
        return proc.blocks if proc is not None else 0

    def background_processes(self) -> list[str]:
        if not self._spawned:
            return []
        own = {p.proc.pid for p in self._procs.values()}
        found = []
        for pid in sorted(set(pids_with_env(sandbox_needle(self.sandbox_id))) - own):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue  # it ended meanwhile
            if command:  # a zombie has none, and holds nothing
                found.append(f"a background process is still running ({command[:80]})")
        return found

    def save_files(self, objects: Path) -> tuple[dict[str, Any], int, list[str]]:
        manifest, size, reasons = save_tree(self.workdir, objects, self._hashes)
        return {"tree": manifest}, size, reasons

    def use_files(self, files: dict[str, Any], objects: Path) -> None:
        self._base_files = (files, objects)

    @classmethod
    def files_missing(cls, files: dict[str, Any], objects: Path) -> str | None:
        return missing_objects(files.get("tree") or [], objects)

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
