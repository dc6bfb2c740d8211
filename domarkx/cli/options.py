"""Shared helpers of the command modules: the store, key=value options, tables."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from domarkx.errors import UsageError


def open_store():
    from domarkx.data.store import Store

    return Store.discover()


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
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        line = "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def add_command(
    subparsers: argparse._SubParsersAction, name: str, handler, help: str, description: str = ""
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=description or help)
    parser.set_defaults(handler=handler)
    return parser
