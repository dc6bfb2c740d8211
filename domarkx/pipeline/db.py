"""doit's JSON dependency database, written safely and read once per change.

The pipeline keeps doit's state in ``.domarkx/doit.json`` (``backend:
json``): the JSON backend reads the whole state in one go, which makes a
no-op build of thousands of tasks as fast as doit gets (sqlite3 runs one
query per task and is ~40% slower). Two things about doit's ``JsonDB`` are
changed, here and only for this backend:

- ``dump`` rewrites the file in place, so a build killed during that write
  would leave half a file: it now writes a temporary file and renames it,
  and skips the write when nothing changed.
- ``_load`` decodes the whole file on every run. A process that runs doit
  many times (``domarkx watch``) keeps the state it last wrote and reuses it
  while the file is still the one it wrote (same inode, size and mtime).
"""

from __future__ import annotations

import os
from typing import Any

from domarkx.data.atomic import write_if_changed

# path -> ((inode, size, mtime_ns) of the file as last written, the state in it)
_last_written: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _dump(self: Any) -> None:
    path = os.path.abspath(self.name)
    write_if_changed(path, self.codec.encode(self._db))
    signature = _signature(path)
    if signature is not None:
        _last_written[path] = (signature, self._db)


def _load(self: Any) -> dict[str, Any]:
    path = os.path.abspath(self.name)
    cached = _last_written.get(path)
    if cached is not None and cached[0] == _signature(path):
        return cached[1]
    return _original_load(self)


_original_load: Any = None


def install() -> None:
    """Patch doit's ``JsonDB`` (once per process)."""
    global _original_load
    from doit import dependency

    if getattr(dependency.JsonDB.dump, "domarkx", False):
        return
    _original_load = dependency.JsonDB._load
    _dump.domarkx = True  # type: ignore[attr-defined]
    dependency.JsonDB.dump = _dump
    dependency.JsonDB._load = _load
