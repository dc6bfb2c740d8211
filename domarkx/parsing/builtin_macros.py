"""The built-in macro commands: ``include``, ``set`` and ``date``.

They are registered as entry points in domarkx's own ``pyproject.toml``, the
same way a third-party package adds a macro.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from domarkx.data.source import read_regular
from domarkx.errors import DomarkxError
from domarkx.parsing.macros import Expansion, MacroCall


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
    from domarkx.parsing.source import decode_document

    try:
        text = decode_document(data, call.expander.display(target))
    except DomarkxError as err:
        raise call.error(str(err)) from None
    return Expansion(text=text.rstrip("\n"), file=target)


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
