"""The errors a user can cause, each printed as one line without a traceback.

Every error carries where it happened (file and line, when known) and what to
do about it. ``domarkx.cli.main`` maps them to exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DomarkxError(Exception):
    """Base of every user-facing error: ``file:line: message`` plus a hint."""

    exit_status = 1  # what the command exits with (spec: 1 input or request wrong)

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.hint = hint
        # The session-config key whose value caused it (``image``), when the code that
        # raises it cannot see the document: whoever can points at that key's line.
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword arguments when doit pickles errors between processes.
        return (_rebuild, (type(self), self.message, self.file, self.line, self.hint))


def _rebuild(
    cls: type[DomarkxError], message: str, file: str | None, line: int | None, hint: str | None
) -> DomarkxError:
    err = cls.__new__(cls)
    DomarkxError.__init__(err, message, file=file, line=line, hint=hint)
    return err


class UsageError(DomarkxError):
    """The command line itself is wrong (exit status 2, like argparse's errors)."""

    exit_status = 2


class DocumentError(DomarkxError):
    """The session document is malformed (front matter, blocks, headings)."""


class MacroError(DomarkxError):
    """A macro could not be expanded (missing include, cycle, unknown command)."""


class RefError(DomarkxError):
    """A snapshot or instance reference matches nothing, or more than one thing."""


class StoreError(DomarkxError):
    """The store under ``.domarkx/`` cannot be read or written."""


class EngineError(DomarkxError):
    """A sandbox could not be created or used (no Docker, missing image, bad language)."""


class LLMError(DomarkxError):
    """A model call failed: missing key, unreachable server, refused request, replay miss."""


class PluginError(DomarkxError):
    """A plugin (macro, engine, model provider) cannot be loaded or registered."""


class BuildLockedError(DomarkxError):
    """Another build holds the project's lock."""
