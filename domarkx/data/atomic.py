"""Atomic file writes: a temporary file in the same folder, then a rename.

A reader (or a crash) sees either the old file or the new one, never half of
one; this is what keeps the store whole when a build is killed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# mkstemp makes files 0600; store files and exports get the usual 0666 & ~umask.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_if_changed(path: str | os.PathLike[str], data: str | bytes) -> bool:
    """Write only when the content differs, so mtimes (and doit) see no change."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if Path(path).read_bytes() == payload:
            return False
    except OSError:
        pass
    write_atomic(path, payload)
    return True
