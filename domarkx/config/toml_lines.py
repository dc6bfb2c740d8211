"""Which line of a TOML file sets a key: tomllib keeps no positions, so errors find them here.

The standard library only.
"""

from __future__ import annotations

import re

_TABLE = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*(?P<key>(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def key_line(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line that sets the key at ``path`` (or its nearest written parent).

    tomllib keeps no positions, so the lines are scanned: table headers and
    ``key = value`` lines (dotted keys included), skipping multi-line strings.
    A key that is missing (a required one) gives the line of its table.
    """
    best: tuple[int, int] | None = None  # (matched length, line)
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, line in enumerate(text.split("\n"), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _TABLE.match(line)
        if header is not None:
            table = _split_key(header.group("name"))
            full = table
        else:
            key = _KEY.match(line)
            if key is None:
                continue
            full = table + _split_key(key.group("key"))
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
        matched = 0
        while matched < min(len(full), len(path)) and full[matched] == path[matched]:
            matched += 1
        if matched == len(full) and (best is None or matched > best[0]):
            best = (matched, number)
    return best[1] if best is not None and best[0] > 0 else None
