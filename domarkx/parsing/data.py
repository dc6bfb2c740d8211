"""YAML and JSON inside a document (front matter, ``session-config``, ``msg-metadata``).

Both are loaded into plain JSON values, which is what a snapshot stores and
hashes. The walk that makes them plain also bounds them: YAML aliases are
shared by reference when loaded but copied when stored, so a few hundred bytes
of aliases (or an alias that holds itself) could stand for gigabytes; a value
nested too deep, an integer too long to print, or a lone surrogate that UTF-8
cannot write would fail later with a traceback. Each is one ``DocumentError``
at the block's line instead.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from domarkx.errors import DocumentError

MAX_VALUES = 100_000  # values of one block, aliases counted as often as they are used
MAX_DEPTH = 100  # nesting of mappings and lists
MAX_INT_BITS = 4096  # about 1,200 digits


class _TooBig(Exception):
    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def load_yaml(text: str, *, file: str, first_line: int, what: str) -> Any:
    """Load YAML with the C loader when present; errors name the document's line."""
    import yaml  # reason: ~25 ms at start-up, and only a document with YAML needs it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = first_line + (mark.line if mark else 0)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DocumentError(
            f"invalid YAML in {what}: {problem}",
            file=file,
            line=line,
            hint=f"fix the YAML syntax of the {what}",
        ) from None
    except (ValueError, RecursionError, OverflowError) as err:  # e.g. a 5,000-digit integer
        raise DocumentError(
            f"invalid YAML in {what}: {_short(err)}",
            file=file,
            line=first_line,
            hint="write very long numbers as strings, and nest less deeply",
        ) from None
    return _plain(data, file=file, line=first_line, what=what)


def load_json(text: str, *, file: str, first_line: int, what: str) -> Any:
    """Load JSON; errors name the document's line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DocumentError(
            f"invalid JSON in {what}: {err.msg} (column {err.colno})",
            file=file,
            line=first_line + err.lineno - 1,
            hint=f"fix the JSON syntax of the {what}",
        ) from None
    except RecursionError:
        raise DocumentError(
            f"{what} nests deeper than {MAX_DEPTH} levels",
            file=file,
            line=first_line,
            hint="flatten the data",
        ) from None
    except ValueError as err:  # e.g. an integer longer than Python will read
        raise DocumentError(
            f"invalid JSON in {what}: {_short(err)}",
            file=file,
            line=first_line,
            hint="write very long numbers as strings",
        ) from None
    return _plain(data, file=file, line=first_line, what=what)


def _short(err: Exception) -> str:
    return str(err).split(";")[0].split("\n")[0]


def _plain(data: Any, *, file: str, line: int, what: str) -> Any:
    try:
        return _Walk().plain(data, 0)
    except _TooBig as err:
        raise DocumentError(f"{what}: {err.problem}", file=file, line=line, hint=err.hint) from None


class _Walk:
    """Makes loaded YAML or JSON plain JSON values, within bounds."""

    def __init__(self) -> None:
        self.count = 0
        self.open: set[int] = set()  # containers being copied: an alias back is a loop

    def plain(self, value: Any, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooBig(
                f"more than {MAX_VALUES:,} values (YAML aliases count each time they are used)",
                "use fewer aliases or less data",
            )
        if isinstance(value, str):
            return _text(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _TooBig("an integer too long to store", "write it as a string")
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, _dt.date | _dt.datetime):
            return value.isoformat()
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if depth >= MAX_DEPTH:
            raise _TooBig(f"nests deeper than {MAX_DEPTH} levels", "flatten the data")
        key = id(value)
        if key in self.open:
            raise _TooBig("a YAML alias that contains itself", "remove the recursive alias")
        self.open.add(key)
        try:
            if isinstance(value, dict):
                return {
                    _text(str(k) if not isinstance(k, str) else k): self.plain(v, depth + 1)
                    for k, v in value.items()
                }
            if isinstance(value, list | tuple):
                return [self.plain(item, depth + 1) for item in value]
            if isinstance(value, set | frozenset):
                # A YAML !!set: a list in a fixed order, so the id is the same in every process.
                items = [self.plain(item, depth + 1) for item in value]
                return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
        finally:
            self.open.discard(key)
        return str(value)


def _text(value: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise _TooBig(
                f"a lone surrogate ({value[err.start]!a}) in a string",
                "write the character itself, or a pair of surrogates",
            ) from None
    return value
