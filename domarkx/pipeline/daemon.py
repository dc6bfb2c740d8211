"""The build daemon: a process that keeps the stages' imports loaded between builds.

An edit of one session costs a few ms of work, but a fresh ``doit`` process
first needs ~200 ms of imports (markdown-it, pydantic and its models,
PyYAML, jinja2) to do it, longer than the whole no-op build of a small
project. As Gradle's daemon and Bazel's server do, the first build that
needs a worker starts this process in the background; later builds ask it
for their workers. It forks one per request, already prepared: the child
takes the build's folder, environment, umask and output streams, then runs
the pool's worker loop (``pool_state.work_loop``) with the shared memory
and pipes the build passed over the socket, exactly as a forked worker does.

- One daemon per user and installation: its socket lives in a private
  folder (``$XDG_RUNTIME_DIR/domarkx``, else ``/tmp/domarkx-<uid>``; mode
  0700, checked) and is named by a fingerprint of the interpreter, the
  installed packages and domarkx's own files. A new version, an upgraded
  library or an edited checkout gets a new daemon; the old one notices
  within a minute and exits, as it does after ``DOMARKX_DAEMON_IDLE``
  seconds (3 hours) without a build. It answers its own user only.
- A worker the build does not need any more, or whose build dies, ends: it
  watches the build's end of the connection.
- ``DOMARKX_DAEMON=0`` turns it off; on CI (``CI`` set) no daemon starts
  unless ``DOMARKX_DAEMON=1``, since a CI job builds once.
  ``domarkx daemon status`` and ``domarkx daemon stop`` show and end them.

Nothing here is used by a build that already has the stages' modules
(``domarkx watch``) or has no stale session (a no-op build).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib
import json
import os
import pickle
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from domarkx.pipeline import pool_state

SWITCH = "DOMARKX_DAEMON"
IDLE_ENV = "DOMARKX_DAEMON_IDLE"
IDLE_SECONDS = 3 * 60 * 60
# How often an idle daemon checks that it is still the current installation's.
CHECK_SECONDS = 60.0

# A request: one kind byte and the payload's length, sent with the file descriptors.
_HEADER = struct.Struct("<cI")
WORKER, STATUS, QUIT = b"W", b"S", b"Q"
# What a worker request passes: the pool's memory file, the start pipe's read end,
# the worker's result pipe's write end, then this process's stdout and stderr.
_FDS = 5
# A Unix socket's path is at most 107 bytes.
_MAX_PATH = 100

_MAIN = "from domarkx.pipeline.daemon import main; main()"
_started: list[subprocess.Popen[bytes]] = []


def enabled() -> bool:
    """Whether builds use (and start) a daemon: ``DOMARKX_DAEMON``, off on CI unless on."""
    value = os.environ.get(SWITCH, "").strip().lower()
    if value in ("0", "off", "no", "false") or not hasattr(socket, "SO_PEERCRED"):
        return False  # off, or no way to tell who connects (the daemon answers its user only)
    if value in ("1", "on", "yes", "true"):
        return True
    return os.environ.get("CI", "").strip().lower() in ("", "0", "false", "no")


def folder() -> str | None:
    """This user's private folder for daemons' sockets (made if missing); None if unsafe."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    uid = os.getuid()
    path = os.path.join(base, "domarkx") if base else f"/tmp/domarkx-{uid}"
    with contextlib.suppress(FileExistsError, OSError):
        os.mkdir(path, 0o700)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    # Another user's folder, a symlink, or one others may write to: no daemon.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        return None
    return path


def fingerprint() -> str:
    """What a daemon's loaded code depends on: interpreter, packages, domarkx's files."""
    import domarkx  # reason: the package's folder (already imported; no cost)

    parts = [sys.executable, sys.version, repr(sys.flags), os.environ.get("PYTHONPATH", "")]
    import site  # reason: loaded at start-up by every interpreter not run with -S

    packages = [*site.getsitepackages(), site.getusersitepackages()]
    for entry in packages:
        with contextlib.suppress(OSError):
            parts.append(f"{entry} {os.stat(entry).st_mtime_ns}")
    for base, dirs, files in os.walk(os.path.dirname(domarkx.__file__)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(base, name))
                parts.append(f"{base}/{name} {info.st_mtime_ns} {info.st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def socket_path() -> str | None:
    """The socket of this installation's daemon (None: no safe folder, or too long a path).

    Found once per build process (a pool asks for each of its workers): the
    fingerprint walks domarkx's files (~1 ms).
    """
    key = (os.environ.get("XDG_RUNTIME_DIR", ""), os.environ.get("PYTHONPATH", ""))
    if key not in _paths:
        where = folder()
        path = None if where is None else os.path.join(where, f"d-{fingerprint()[:16]}.sock")
        _paths[key] = path if path is not None and len(path.encode()) <= _MAX_PATH else None
    return _paths[key]


# ``socket_path`` of this process, by the variables that change it.
_paths: dict[tuple[str, str], str | None] = {}


# The build's side ------------------------------------------------------------------
def hire(
    prepare: Callable[[], None],
    work: pool_state.Work,
    names: list[str],
    slot: int,
    workers: int,
    fds: tuple[int, int, int],
) -> socket.socket | None:
    """Ask the daemon for a worker; its connection (keep it open while it works).

    None when no daemon answers; then one is started for the next build.
    """
    if not enabled():
        return None
    path = socket_path()
    if path is None:
        return None
    link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        link.settimeout(2.0)
        link.connect(path)
        request = {
            "work": work,
            "names": names,
            "slot": slot,
            "workers": workers,
            "folder": os.getcwd(),
            "environ": dict(os.environ),
            "umask": _umask(),
        }
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        socket.send_fds(link, [_HEADER.pack(WORKER, len(payload))], [*fds, 1, 2])
        link.sendall(payload)
        link.settimeout(None)
    except (OSError, pickle.PicklingError):
        link.close()
        if slot == 0:
            start(path, f"{prepare.__module__}:{prepare.__qualname__}")
        return None
    return link


def _umask() -> int:
    """This process's umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start(path: str, prepare: str) -> None:
    """Start the daemon for ``path`` in the background (it outlives this build)."""
    with contextlib.suppress(OSError), open(path[: -len(".sock")] + ".log", "ab") as log:
        _started.append(
            subprocess.Popen(
                [sys.executable, "-c", _MAIN, path, prepare],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=os.path.dirname(path),
                start_new_session=True,
            )
        )


def ask(path: str, kind: bytes) -> dict[str, Any] | None:
    """Send a daemon a status or quit request; its answer (None: it does not answer)."""
    link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        link.settimeout(2.0)
        link.connect(path)
        link.sendall(_HEADER.pack(kind, 0))
        answer = b""
        while chunk := link.recv(4096):
            answer += chunk
        return dict(json.loads(answer))
    except (OSError, ValueError):
        return None
    finally:
        link.close()


def running() -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Every daemon socket in this user's folder, and each daemon's status."""
    where = folder()
    if where is None:
        return
    for name in sorted(os.listdir(where)):
        if name.startswith("d-") and name.endswith(".sock"):
            path = os.path.join(where, name)
            yield path, ask(path, STATUS)


# The daemon's side -----------------------------------------------------------------
def main() -> None:
    """``python -c 'from domarkx.pipeline.daemon import main; main()' SOCKET MODULE:FUNCTION``."""
    path, prepare = sys.argv[1], sys.argv[2]
    idle = float(os.environ.get(IDLE_ENV) or IDLE_SECONDS)
    serve(path, prepare, idle)


def serve(path: str, prepare: str, idle: float) -> None:
    """Load what ``prepare`` loads, then hand out prepared workers until idle or outdated."""
    holder = os.open(path[: -len(".sock")] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another daemon for this socket is starting or running
    module, _, function = prepare.partition(":")
    getattr(importlib.import_module(module), function)()
    mine = fingerprint()
    if not os.path.basename(path).startswith(f"d-{mine[:16]}"):
        print(f"domarkx daemon: {path} is not this installation's socket", file=sys.stderr)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    inode = os.stat(path).st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # what is loaded now stays shared with the forked workers
    status = {"pid": os.getpid(), "started": time.time(), "python": sys.executable}
    status.update(served=0, fingerprint=mine, idle_seconds=0)
    last = time.monotonic()
    listener.settimeout(min(CHECK_SECONDS, idle))
    try:
        while time.monotonic() - last < idle:
            try:
                link, _ = listener.accept()
            except TimeoutError:
                if fingerprint() != mine:
                    return  # outdated: the next build starts the current one
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == inode:
                        continue
                return  # the socket was removed or replaced
            with link:
                if not _same_user(link):
                    continue
                status["idle_seconds"] = int(time.monotonic() - last)
                served = status["served"]
                if _answer(link, listener, status):
                    return
                if status["served"] != served:
                    last = time.monotonic()  # a build (a status request is not one)
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        listener.close()
        _remove_leftovers(path)
        os.close(holder)


def _remove_leftovers(path: str) -> None:
    """An ending daemon's lock file, and its log when empty (a new fingerprint, new files)."""
    stem = path[: -len(".sock")]
    with contextlib.suppress(OSError):
        os.unlink(stem + ".lock")
    with contextlib.suppress(OSError):
        if os.stat(stem + ".log").st_size == 0:
            os.unlink(stem + ".log")


def _same_user(link: socket.socket) -> bool:
    """Whether the process at the other end runs as this user (``SO_PEERCRED``)."""
    try:
        creds = link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return False
    uid: int = struct.unpack("3i", creds)[1]
    return uid == os.getuid()


def _answer(link: socket.socket, listener: socket.socket, status: dict[str, Any]) -> bool:
    """Serve one request; True when the daemon is asked to quit."""
    link.settimeout(2.0)
    try:
        header, fds, _flags, _address = socket.recv_fds(link, _HEADER.size, _FDS)
    except OSError:
        return False
    if len(header) != _HEADER.size:
        _close(fds)
        return False
    kind: bytes
    size: int
    kind, size = _HEADER.unpack(header)
    if kind != WORKER:
        _close(fds)
        status = {**status, "current": fingerprint() == status["fingerprint"]}
        with contextlib.suppress(OSError):
            link.sendall(json.dumps(status).encode())
        return kind == QUIT
    status["served"] += 1
    if len(fds) != _FDS or os.fork():
        _close(fds)
        return False
    code = 1
    try:
        listener.close()
        _work(link, fds, size)
        code = 0
    finally:
        os._exit(code)


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _work(link: socket.socket, fds: list[int], size: int) -> None:
    """A forked worker: take on the build's surroundings, then its share of the work."""
    payload = b""
    while len(payload) < size:
        chunk = link.recv(size - len(payload))
        if not chunk:
            return
        payload += chunk
    link.settimeout(None)
    request = pickle.loads(payload)
    shared_fd, go, results, out, err = fds
    pool_state.worker_process = True
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    os.dup2(out, 1)
    os.dup2(err, 2)
    _close([out, err])
    os.chdir(request["folder"])
    os.environ.clear()
    os.environ.update(request["environ"])
    os.umask(request["umask"])
    time.tzset()
    gc.enable()  # what the daemon loaded stays frozen: no collection copies its pages
    # The build holds the other end: when it ends (or dies), so does this worker.
    threading.Thread(target=_die_with_build, args=(link,), daemon=True).start()
    names = request["names"]
    shared = pool_state.Shared(shared_fd, len(names), request["workers"])
    pool_state.work_loop(shared, names, request["slot"], request["work"], go, results)


def _die_with_build(link: socket.socket) -> None:
    with contextlib.suppress(OSError):
        link.recv(1)
    os.kill(os.getpid(), signal.SIGKILL)
