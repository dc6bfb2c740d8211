"""The built-in macro commands: ``include``, ``set`` and ``date``.

They are registered as entry points in domarkx's own ``pyproject.toml``, the
same way a third-party package adds a macro.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from pathlib import Path, PurePosixPath

from domarkx.data.source import read_regular
from domarkx.errors import DomarkxError
from domarkx.parsing.macros import Expansion, MacroCall
from domarkx.parsing.source import decode_document


def include(call: MacroCall) -> Expansion:
    """The text of ``path``, relative to the including file, kept inside the project.

    With no project found, the including document's own folder is the limit.
    """
    raw = call.params.get("path")
    if not raw:
        raise call.error("include needs a path", hint="write `domarkx://include?path=FILE`")
    target = (call.file.parent / raw).resolve()  # symlinks resolved: where it really is
    root = (call.expander.confine or call.expander.root).resolve()
    if not target.is_relative_to(root):
        raise call.error(
            f"include `{raw}` leaves the project folder {root}",
            hint="include only files inside the project",
        )
    secret = _secret_part(target, root, Path(os.path.normpath(call.file.parent / raw)))
    if secret is not None and not allowed(secret[2], call.expander.settings()[0]):
        part, kind, path = secret
        raise call.error(
            f"include `{raw}` refused: `{part}` is a {kind}, which may hold secrets",
            hint=f'if it holds none, allow it in domarkx.toml: `[includes] allow = ["{path}"]`',
        )
    if any(target == Path(f).resolve() for f, _ in call.chain):
        names = [call.expander.display(f) for f, _ in call.chain] + [call.expander.display(target)]
        raise call.error(
            f"include cycle: {' -> '.join(names)}",
            hint="remove one of the includes that lead back to a file already being included",
        )
    try:
        data = read_regular(target)
    except FileNotFoundError:
        raise call.error(
            f"included file `{raw}` not found ({call.expander.display(target)})",
            hint="check the path; it is relative to the file that includes it",
        ) from None
    except OSError as err:
        raise call.error(f"cannot read included file `{raw}`: {err.strerror}") from None
    call.depends_on(target)
    try:
        text = decode_document(data, call.expander.display(target))
    except DomarkxError as err:
        raise call.error(str(err)) from None
    return Expansion(text=text.rstrip("\n"), file=target)


# Names of files that hold keys (besides dotfiles: ``.env``, ``.git/``, ``.ssh/``, ...).
KEY_FILES = ("*.pem", "*.key", "id_*", "*.p12", "*.pfx", "*.ppk", "*.jks", "*.keystore")


def _secret_part(real: Path, root: Path, lexical: Path) -> tuple[str, str, str] | None:
    """The first dotfile, dot folder or key file on the way to an included file, which
    of these it is, and that file's path from the project root; None when there is none.

    Both the file's real path and the path as written count: a link named
    ``notes.md`` to ``.env`` is refused, and so is a link named ``.env``.
    """
    for path, base in ((real, root), (lexical, Path(os.path.normpath(root.absolute())))):
        try:
            parts = path.relative_to(base).parts
        except ValueError:
            continue
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            kind = None
            if part.startswith("."):
                kind = "dotfile" if last else "dot folder"
            elif last and _is_key_file(part):
                kind = "key file"
            if kind is not None:
                return part, kind, PurePosixPath(*parts).as_posix()
    return None


def _is_key_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in KEY_FILES)


def allowed(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``[includes] allow`` lists ``path`` (from the project root, ``/``-separated):
    a pattern matches the path or a folder on it (``*``, ``?`` and ``[...]`` as in a shell,
    ``*`` crossing ``/`` too)."""
    folders = PurePosixPath(path).parts
    candidates = ["/".join(folders[: i + 1]) for i in range(len(folders))]
    for pattern in patterns:
        pattern = pattern.strip().removeprefix("./").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            return True
    return False


def set_value(call: MacroCall) -> str:
    """The text given as ``value``."""
    return call.params.get("value", "")


def date(call: MacroCall) -> str:
    """The import date; honours SOURCE_DATE_EPOCH for reproducible builds."""
    return import_time().strftime(call.params.get("format") or "%Y-%m-%d")


def import_time() -> dt.datetime:
    """Now, or SOURCE_DATE_EPOCH (UTC) when it is set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
        except ValueError:
            raise DomarkxError(
                f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds",
                hint="unset it or set it to e.g. `git log -1 --format=%ct`",
            ) from None
    return dt.datetime.now(dt.UTC).astimezone()
