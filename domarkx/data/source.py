"""Reading a document or an included file: regular files only, never a wait.

Opening a named pipe for reading waits for a writer, and reading a device
(``/dev/zero``) never ends: either would hang ``import`` or a build. A
file is opened without blocking and read only when it is a regular file;
anything else is an ``OSError`` whose ``strerror`` says what it is, which
the callers already turn into a one-line error naming the file.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class NotRegularFile(OSError):
    """The path is a pipe, a socket or a device, not a file to read."""


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise NotRegularFile(0, f"{kind}, not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
