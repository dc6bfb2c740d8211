"""Where a setting is written in a session document, for errors about what it asks.

A snapshot keeps the settings, not their lines; an error about a grant (a key,
a network) names the line of the key in the document's ``session-config``
block, found again in the source file when the error is made.
"""

from __future__ import annotations

import re
from pathlib import Path

from domarkx.errors import DomarkxError
from domarkx.parsing.fences import fence_end


def config_key_line(source: str | Path, key: str) -> int | None:
    """The 1-based line of ``key`` in the session-config block of ``source`` (None: unknown).

    ``key`` is the setting's last name (``api_key_env``, ``network``); the first
    line after the block's opening fence that sets it is the one.
    """
    from domarkx.parsing.markdown import MarkdownParser, decode_document

    path = Path(source)
    try:
        text = decode_document(path.read_bytes(), str(path))
        parsed = MarkdownParser().parse_text(text, str(path), path)
    except (DomarkxError, OSError):
        return None
    lines = text.split("\n")
    start = parsed.config_line
    if start is None:
        return None
    try:
        end = fence_end(lines, start - 1) - 1  # the closing fence's index
    except ValueError:
        return start
    # ``key:`` at the start of a line, or inside a flow mapping (``model: {endpoint: x}``).
    pattern = re.compile(rf"""(^|[\s{{,])["']?{re.escape(key)}["']?\s*:""")
    for number in range(start, end):
        if pattern.search(lines[number]):
            return number + 1
    return start
