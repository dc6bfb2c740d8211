"""Rewriting a session document the user owns (``chat`` appends a turn, ``migrate``).

A document is replaced atomically (a temporary file beside it, then a rename)
so that a reader or a killed process never sees half of it. What the rename
would lose is kept or refused, never dropped silently:

- the file's permission bits (a ``chmod 600`` document stays 600) and, where
  the system lets this process, its owner and group;
- a symbolic link is followed: the file it names is replaced, the link stays;
- a file with other hard links is refused before anything is written: a rename
  would leave the other names holding the old text, and writing over the same
  inode in place could leave it half-written if the process died. One name (or
  symbolic links, which are followed) keeps every copy in step.

Temporary files that a killed writer left beside the document are removed by
the next write of the same document.
"""

from __future__ import annotations

import os
import stat

from domarkx.data.atomic import remove_stale, write_atomic
from domarkx.errors import DocumentError


def check_replaceable(path: str | os.PathLike[str], display: str) -> None:
    """A DocumentError when replacing ``path`` would break its hard links."""
    try:
        links = os.stat(path).st_nlink
    except FileNotFoundError:
        return  # a new document
    except OSError as err:
        raise DocumentError(f"cannot read: {err.strerror}", file=display) from None
    if links > 1:
        raise DocumentError(
            f"the document has {links} hard links; it is written by replacing it, which "
            "would leave the other names holding the old text, so nothing is written",
            file=display,
            hint="keep one name for it (`cp FILE FILE.new && mv FILE.new FILE`), or make the "
            "other names symbolic links (`ln -sf`), which are followed",
        )


def replace_document(path: str | os.PathLike[str], data: bytes | str, display: str) -> None:
    """Replace the document at ``path`` (through a symbolic link) by ``data``, keeping its
    mode and owner; refused when it has other hard links."""
    real = os.path.realpath(path)
    check_replaceable(real, display)
    try:
        found = os.stat(real)
    except FileNotFoundError:
        mode, owner = None, None
    else:
        mode, owner = stat.S_IMODE(found.st_mode), (found.st_uid, found.st_gid)
    remove_stale(real)
    try:
        write_atomic(real, data, mode=mode, owner=owner)
    except OSError as err:
        raise DocumentError(
            f"cannot write: {err.strerror or err}; the document is as it was", file=display
        ) from None
