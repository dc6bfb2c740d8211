"""Which files a session document can make domarkx read: those inside its project.

A session, an included file or a partial is read only when its real path
(symlinks resolved) lies inside the project root; with no project found, the
root is the document's own folder (tools-chat-trust spec, section 3). So a
shared repository cannot hand over ``/etc/passwd`` or ``~/.ssh/id_rsa`` as a
session symlink or an include, and a document lying loose in the home folder
cannot include ``../.ssh/id_rsa``.

Which project a document belongs to is decided on the path as given, before
symlinks are resolved: the command's project when the document lies in it,
else the nearest project above the document, else the document's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from domarkx.data.layout import PROJECT_MARKERS, find_root
from domarkx.errors import DocumentError


def is_project(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a project marker (dodo.py, sessions/, .domarkx/)."""
    return any(os.path.exists(os.path.join(folder, marker)) for marker in PROJECT_MARKERS)


def document_root(document: str | os.PathLike[str], project_root: str | os.PathLike[str]) -> Path:
    """The real folder whose files ``document`` may make domarkx read.

    ``project_root`` is the command's project (``Store.root``); it is the
    answer when it is a project and the document lies in it.
    """
    return _root(document, project_root, os.path.realpath(document))


def _root(
    document: str | os.PathLike[str], project_root: str | os.PathLike[str], real: str
) -> Path:
    """``document_root``, the document's real path ``real`` known already."""
    lexical = os.path.abspath(document)
    project = os.path.abspath(project_root)
    if is_project(project) and (
        _within(lexical, project) or _within(real, os.path.realpath(project))
    ):
        return Path(os.path.realpath(project))
    return Path(os.path.realpath(find_root(os.path.dirname(lexical))))


def check_document(
    document: str | os.PathLike[str], project_root: str | os.PathLike[str], display: str
) -> None:
    """A DocumentError unless ``document``'s real path lies inside its root."""
    real = os.path.realpath(document)
    root = _root(document, project_root, real)
    if not _within(real, str(root)):
        raise DocumentError(
            f"the document is a link to {real}, outside the project folder {root}; it is not read",
            file=display,
            hint="copy the file into the project instead of linking to it",
        )


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
