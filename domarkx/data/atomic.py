"""Atomic file writes: a temporary file in the same folder, then a rename.

A reader (or a killed process) sees either the old file or the new one,
never half of one; this is what keeps the store whole when a build is
killed. A rename survives SIGKILL as it is; ``durable=True`` also makes it
survive a power cut or a kernel crash (``fsync`` of the file before the
rename, and of the folder after it), for files whose loss costs more than a
rebuild: doit's state, the model replay records.

This is the one place that writes a file atomically; everything that must
not be seen half-written goes through it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import threading

from domarkx.signals import process_alive

# Temporary files are made 0600; store files and exports get the usual 0666 & ~umask.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# The numbers in this process's temporary names (with its pid, unique on the machine).
_serial = itertools.count()


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    durable: bool = False,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` by ``data`` (str as UTF-8, ``\\n`` kept) in one rename.

    ``mode`` and ``owner`` (uid, gid) are the new file's (a document keeps its
    own): by default the usual ``0666 & ~umask`` and this process's.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # The writer's pid in the name: a file left by a killed writer is known as such.
    head = os.path.join(folder, temporary_prefix(name))
    tail = f".{os.getpid()}.tmp"
    with _writing_lock:  # not between the exit's clean-up and a new temporary file
        if _exiting:
            raise OSError(f"{target}: not written, the process is ending")
        fd, tmp = _create(head, tail, folder)
        _writing.add(tmp)
    try:
        try:
            if owner is not None:
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(fd, *owner)
            os.fchmod(fd, _FILE_MODE if mode is None else mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        with _writing_lock:
            _writing.discard(tmp)
    if durable:
        _fsync_folder(folder or ".")


def _create(head: str, tail: str, folder: str) -> tuple[int, str]:
    """A new temporary file ``<head><n><tail>`` (exclusive; its folder made if missing).

    A serial number, not tempfile's random name (whose draw cost more than the
    write of a small file): the pid makes the name unique to this process, and
    ``O_EXCL`` skips one that a dead process of the same pid left.
    """
    made = False
    while True:
        tmp = f"{head}{next(_serial)}{tail}"
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            if made:
                raise
            os.makedirs(folder or ".", exist_ok=True)
            made = True


def temporary_prefix(name: str) -> str:
    """How the temporary files of ``name`` start: ``.`` and its first 100 bytes, whole
    characters only (a name of 80 CJK characters is 240 bytes; a file name may have 255)."""
    return "." + name.encode("utf-8")[:100].decode("utf-8", "ignore") + "."


def remove_stale(path: str | os.PathLike[str]) -> int:
    """Remove the temporary files that killed writers of ``path`` left beside it; how many.

    A writer killed by SIGKILL between creating its temporary file and the
    rename leaves ``.<name>.<n>.<pid>.tmp``; the next write of the same
    file removes those whose process is gone.
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = temporary_prefix(name)
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for entry in names:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        if not _writer_gone(entry):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, entry))
            removed += 1
    return removed


def _writer_gone(name: str) -> bool:
    """Whether the writer of temporary file ``name`` (``...<pid>.tmp``) is dead."""
    pid = name[: -len(".tmp")].rpartition(".")[2]
    return pid.isdigit() and not process_alive(int(pid))
    return True


# Temporary files this process is writing. A build interrupted by SIGTERM or
# Ctrl-C exits from its main thread while doit's worker threads stop wherever
# they are, perhaps between creating a temporary file and renaming it: at exit
# (after the handlers that end runs, registered later) those files are removed,
# and no write starts any more.
_writing: set[str] = set()
_writing_lock = threading.Lock()
_exiting = False


def _remove_unfinished() -> None:
    global _exiting
    with _writing_lock:
        _exiting = True
        for tmp in list(_writing):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _forked() -> None:
    # A forked worker starts with none of the parent's writes, and a free lock.
    global _writing_lock
    _writing_lock = threading.Lock()
    _writing.clear()


atexit.register(_remove_unfinished)
os.register_at_fork(after_in_child=_forked)


def remove_orphans(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files under ``folder`` whose writer is dead; how many.

    A process killed by SIGKILL between creating its temporary file and the
    rename leaves it behind (nothing can run then). Files of live writers
    (a ``domarkx run`` beside the build) are left alone.
    """
    removed = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            if not _writer_gone(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(parent, name))
                removed += 1
    return removed


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_if_changed(path: str | os.PathLike[str], data: str | bytes) -> bool:
    """Write only when the content differs, so mtimes (and doit) see no change."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(path, "rb") as handle:
            if handle.read() == payload:
                return False
    except OSError:
        pass
    write_atomic(path, payload)
    return True


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line with a single ``write`` to a file opened for appending.

    A process killed at any moment leaves every earlier line whole; a reader
    drops a last line without its newline (see ``Store.get_instance``).
    """
    payload = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
