"""Session names: ``sessions/a/b.md`` is ``a/b``; names starting with ``_`` are partials."""

from __future__ import annotations

import os
from pathlib import Path

from domarkx.data.layout import SESSIONS_DIR, Layout


def session_name(path: Path, root: Path) -> str:
    """``a/b`` for ``<root>/sessions/a/b.md``; the file's stem for any other file."""
    resolved = _real(path)
    try:
        relative = resolved.relative_to(_real(root / SESSIONS_DIR))
    except ValueError:
        return resolved.stem
    return relative.with_suffix("").as_posix()


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root (POSIX), or absolute when outside it.

    The name the user gave wins over where a symlink leads (a link to
    ``/dev/zero`` is still ``sessions/zero.md``).
    """
    given = Path(os.path.abspath(path))
    try:
        return given.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        pass
    try:  # the real paths only when the given one is not under the root
        return _real(path).relative_to(_real(root)).as_posix()
    except ValueError:
        return str(given)


def _real(path: Path | str) -> Path:
    """The real path, as far as it resolves: a symlink loop is not an exception here
    (``Path.resolve`` raises on one); reading the file reports it.
    """
    return Path(os.path.realpath(path))


def is_partial(relative: Path) -> bool:
    """Files and folders named ``_*`` are include partials, not sessions (as in Sass)."""
    return any(part.startswith("_") for part in relative.parts)


def session_files(root: Path) -> list[Path]:
    """Every session document under ``<root>/sessions``, sorted: the ones the build builds.

    ``pipeline.layout`` decides which files are sessions (partials ``_*`` and
    hidden files left out); this is the same list as paths.
    """
    layout = Layout(str(root))
    return [Path(layout.abs(layout.source(name))) for name in layout.session_names()]
