"""Shared helpers of the command modules: the store, key=value options, tables."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from domarkx.errors import UsageError

if TYPE_CHECKING:
    from domarkx.data.store import Store

# What each command module's ``register`` receives, and the ``run`` it registers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Args: TypeAlias = argparse.Namespace
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def open_store(document: str | os.PathLike[str] | None = None) -> Store:
    """The store of the project that holds ``document`` (found from its folder upwards),
    else of the current folder's project (tools-chat-trust spec, section 3)."""
    # The store's module (~5 ms): every command module imports this one at start-up.
    from domarkx.data.store import Store

    if document is None:
        return Store.discover()
    folder = os.path.dirname(os.path.abspath(document))
    while folder and not os.path.isdir(folder):  # a document not written yet
        folder = os.path.dirname(folder)
    return Store.discover(Path(folder))


def parse_params(values: Iterable[str] | None) -> dict[str, str]:
    """``--param K=V`` options to a dict; a value without ``=`` is a usage error."""
    params: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--param {item!r} is not KEY=VALUE", hint="write e.g. `--param user=ana`"
            )
        params[key] = value
    return params


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain, Docker-style table: columns padded, three spaces apart."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        line = "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def add_command(
    subparsers: Subparsers, name: str, handler: Handler, help: str, description: str = ""
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description or help
    )
    parser.set_defaults(handler=handler)
    # `domarkx chat F --debug` as well as `domarkx --debug chat F` (SUPPRESS: the
    # option before the command keeps its value when this one is not given).
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the Python traceback of an error",
    )
    return parser


def add_yes(parser: argparse.ArgumentParser, also: str = "") -> None:
    """``-y/--yes``: run model-written code on this machine without asking (docs/security.md)."""
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="run model-written code on this machine without asking (local_shell)" + also,
    )


@contextlib.contextmanager
def environment(name: str, value: str | None) -> Iterator[None]:
    """``name=value`` in this process (and the build's) while the block runs (None: as is)."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
