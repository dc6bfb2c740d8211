"""doit's state as a JSON file plus an append-only journal: a killed build loses nothing.

doit keeps a task's state (the file states it depended on, its values) in
memory and writes the whole database once, when the run ends; a build
killed before then forgets every task it finished, and the next build
redoes them all. ``JournalDB`` is a doit state backend (doit's ``BACKEND``
plugin, registered under the entry point group ``doit.BACKEND`` as
``domarkx``, chosen by ``DOIT_CONFIG["backend"]``) that also appends each
finished task's state to ``<dep_file>.journal`` as it is saved:

- ``<dep_file>`` is the state as doit's own ``json`` backend writes it (same
  format: switching backends loses nothing). It is rewritten at the end of a
  run that changed something, atomically and durably, once the journal
  holds a tenth of its size (``FOLD_SHARE``; 64 KB at least), and the
  journal is emptied after it. An edit appends a few lines: rewriting and
  syncing the whole state for them (~45 ms at 5,000 tasks) cost more than
  the edit's own work, and reading them back costs next to nothing.
- Each line of the journal is one change (``["s", task, key, value]``,
  ``["r", task]``, ``["R"]``); a task's lines go out in one ``write`` when
  doit saves its last key (``deps:``), so a task is in the journal whole or,
  cut by a kill, re-done. Reading replays the journal over the file and
  stops at a torn last line. Replaying twice gives the same state, so a kill
  between the rewrite and the emptying is harmless.
- Nothing is read until doit first asks (after the build lock is taken: a
  build that waited for another sees that build's state, not the one from
  before it waited), and the end of a run writes what is on disk plus this
  run's changes, never a copy read earlier: a ``doit`` run while ``domarkx
  watch`` waits keeps its state.

A process that runs doit many times (``domarkx watch``) keeps the state it
last wrote and reuses it while the files are the ones it wrote.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import Any

from doit.dependency import DatabaseException
from doit.exceptions import InvalidCommand

from domarkx.data import lock
from domarkx.data.atomic import write_atomic
from domarkx.data.layout import Layout
from domarkx.errors import DomarkxError

# The last line of a task's state as doit's ``save_success`` writes it.
_LAST_KEYS = ("deps:", "ignore:")

# The journal is folded into the state file once it is this share of the file's
# size, or FOLD_MIN bytes when the file is small.
FOLD_SHARE = 10
FOLD_MIN = 64 * 1024

# path -> (signature of the state file and journal as this process left them, state)
_last_written: dict[str, tuple[tuple[Any, ...], dict[str, dict[str, Any]]]] = {}


class DatabaseError(DatabaseException):  # type: ignore[misc]  # doit has no types
    """The state file is damaged (doit reports it; removing the file repairs it)."""


def _signature(path: str, journal: str) -> tuple[Any, ...]:
    result: list[Any] = []
    for name in (path, journal):
        try:
            stat = os.stat(name)
            result.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            result.append(None)
    return tuple(result)


def _set(state: dict[str, dict[str, Any]], task_id: str, key: str, value: Any) -> None:
    """Set one key of a task's state; its list of dependencies drops the files no longer in it.

    doit keeps the state of every file a task ever depended on (an include
    removed, a stage file of an older domarkx version's folder): never read
    again, they would grow the state file with every change. Its own keys end
    with ``:``.
    """
    task = state.setdefault(task_id, {})
    task[key] = value
    if key == "deps:" and isinstance(value, list):
        keep = set(value)
        for stale in [k for k in task if not k.endswith(":") and k not in keep]:
            del task[stale]


class JournalDB:
    """A doit state backend that saves each finished task at once (see the module)."""

    desc = "JSON file plus an append-only journal: keeps finished tasks when killed"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        self.name = name
        self.codec = codec
        self.journal = f"{name}.journal"
        self._state: dict[str, dict[str, Any]] | None = None
        self._pending: list[str] = []
        self._changed = False
        self._fd: int | None = None
        # The files as read (signature of the state file, journal size), and how many
        # bytes this run appended since: at the end, whether the memory is the disk.
        self._read_as: tuple[Any, int] | None = None
        self._appended = 0
        self._locked: str | None = None  # the build lock this backend took (forget)

    # Reading -------------------------------------------------------------------
    @property
    def _db(self) -> dict[str, dict[str, Any]]:
        if self._state is None:
            self._state = self._read()
        return self._state

    def _read(self) -> dict[str, dict[str, Any]]:
        path = os.path.abspath(self.name)
        signature = _signature(self.name, self.journal)
        self._read_as = (signature[0], signature[1][1] if signature[1] else 0)
        cached = _last_written.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        state = self._read_file()
        self._replay(state, self._journal_lines())
        return state

    def _read_file(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.name, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return {}
        try:
            state = self.codec.decode(text)
        except ValueError as error:
            raise DatabaseError(
                f"{error}\nInvalid JSON data in {os.path.abspath(self.name)}\n"
                "To fix this problem, remove the file: the next build makes a new one "
                "(and re-checks every task).\n"
            ) from None
        return state if isinstance(state, dict) else {}

    def _journal_lines(self) -> list[list[Any]]:
        """The journal's whole lines; a torn last one (a kill mid-write) is left out."""
        try:
            with open(self.journal, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        changes = []
        for raw in data.split(b"\n"):
            if not raw:
                continue
            try:
                change = json.loads(raw)
            except ValueError:
                break
            if not isinstance(change, list) or not change:
                break
            changes.append(change)
        return changes

    @staticmethod
    def _replay(state: dict[str, dict[str, Any]], changes: list[list[Any]]) -> None:
        for change in changes:
            op = change[0]
            if op == "s" and len(change) == 4:
                _set(state, change[1], change[2], change[3])
            elif op == "r" and len(change) == 2:
                state.pop(change[1], None)
            elif op == "R":
                state.clear()

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Each task's saved state (a copy): the tasks a build has finished, killed or not."""
        return copy.deepcopy(self._db)

    # doit's backend interface -----------------------------------------------------
    def get(self, task_id: str, dependency: str) -> Any:
        # doit asks ~5 times per task: the state once read, no property in between.
        state = self._state if self._state is not None else self._db
        task = state.get(task_id)
        return None if task is None else task.get(dependency)

    def in_(self, task_id: str) -> bool:
        return task_id in self._db

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        _set(self._db, task_id, dependency, value)
        self._log(["s", task_id, dependency, value], flush=dependency in _LAST_KEYS)

    def remove(self, task_id: str) -> None:
        self._hold_build_lock()
        self._db.pop(task_id, None)
        self._log(["r", task_id], flush=True)

    def remove_all(self) -> None:
        self._hold_build_lock()
        self._db.clear()
        self._log(["R"], flush=True)

    def dump(self) -> None:
        """End of the run: fold the journal into the file (only when something changed)."""
        try:
            self._dump()
        finally:
            if self._locked is not None:
                lock.release(self._locked)
                self._locked = None

    def _hold_build_lock(self) -> None:
        """``doit forget`` and ``doit clean --forget``: change the state under the build lock.

        A build holds it (its reporter takes it) while it appends to the
        journal; forgetting then would fold the journal under its feet. So
        these commands take the lock too, or stop with one message while a
        build runs. In a build, or in ``domarkx watch``, the lock is this
        process's already.
        """
        if self._locked is not None:
            return
        path = Layout.at().lock_file
        if lock.is_held(path):
            return
        try:
            lock.acquire(path, doing="forget")
        except DomarkxError as err:
            raise InvalidCommand(f"{err.message}; nothing was forgotten ({err.hint})") from None
        self._locked = path

    def _dump(self) -> None:
        self._flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._changed:
            # Only a run that changed something (and so held the build lock) folds
            # the journal: another build may be appending to it right now. A
            # journal a killed build left is read as it is until then.
            return
        # The memory is the disk unless another process wrote since this one read;
        # then the disk (which holds this run's changes, in the journal) is read again.
        # Never a stale copy written back.
        signature = _signature(self.name, self.journal)
        now = (signature[0], signature[1][1] if signature[1] else 0)
        read_as = self._read_as
        if (
            self._state is not None
            and read_as is not None
            and now
            == (
                read_as[0],
                read_as[1] + self._appended,
            )
        ):
            state = self._state
        else:
            state = self._read_file()
            self._replay(state, self._journal_lines())
        if signature[1] is not None and signature[1][1] * FOLD_SHARE < max(
            FOLD_MIN * FOLD_SHARE, signature[0][1] if signature[0] else 0
        ):
            # A short journal stays: the next read replays it (see the module).
            self._state = state
            self._changed = False
            self._appended = 0
            self._read_as = now
            _last_written[os.path.abspath(self.name)] = (signature, state)
            return
        write_atomic(self.name, self.codec.encode(state), durable=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal)
        self._state = state
        self._changed = False
        self._appended = 0
        signature = _signature(self.name, self.journal)
        self._read_as = (signature[0], 0)
        _last_written[os.path.abspath(self.name)] = (signature, state)

    # Writing the journal ------------------------------------------------------------
    def _log(self, change: list[Any], flush: bool) -> None:
        self._changed = True
        self._pending.append(self.codec.encode(change))
        if flush:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode("utf-8")
        self._pending = []
        if self._fd is None:
            self._fd = self._open_journal()
        os.write(self._fd, data)
        self._appended += len(data)

    def _open_journal(self) -> int:
        """Open the journal to append, cutting a torn last line a killed run left."""
        os.makedirs(os.path.dirname(os.path.abspath(self.journal)), exist_ok=True)
        fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = os.pread(fd, size, 0)
            os.ftruncate(fd, data.rfind(b"\n") + 1)
            self._appended -= size - (data.rfind(b"\n") + 1)
        return fd
