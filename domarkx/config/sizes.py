"""Sizes as the configuration writes them (``512m``, ``2g``): read without the settings models.

The macro expander reads its default limit from here on every build that
parses a document; ``settings`` (pydantic models) is loaded only when a
configuration is read.
"""

from __future__ import annotations

import re

# The most text macros may produce for one document (``[limits] expansion``).
DEFAULT_EXPANSION = "10m"

# A size: a number and an optional unit (b, k, m, g, kb, mb, gb; powers of 1024).
SIZE = re.compile(r"^([0-9]+)\s*([kmg]?)b?$", re.IGNORECASE)


def size_in_bytes(value: str) -> int:
    """``512m`` -> bytes, as Docker reads memory sizes (b, k, m, g, kb, mb, gb; powers of 1024)."""
    match = SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size")
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(match.group(1)) * units[match.group(2).lower()]
