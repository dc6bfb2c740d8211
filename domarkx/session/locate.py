"""Where a setting is written in a session document, for errors about what it asks.

A snapshot keeps the settings, not their lines; an error about a grant (a key,
a network) names the line of the key in the document's ``session-config``
block, found again in the source file when the error is made.
"""

from __future__ import annotations

import re
from pathlib import Path

from domarkx.errors import DomarkxError


def config_key_line(source: str | Path, key: str) -> int | None:
    """The 1-based line of ``key`` in the session-config block of ``source`` (None: unknown).

    ``key`` is the setting's last name (``api_key_env``, ``network``); the first
    line after the block's opening fence that sets it is the one.
    """
    from domarkx.parsing.markdown import MarkdownParser

    path = Path(source)
    try:
        parsed = MarkdownParser().parse_file(path)
        lines = path.read_text(encoding="utf-8").split("\n")
    except (DomarkxError, OSError, UnicodeDecodeError):
        return None
    start = parsed.config_line
    if start is None:
        return None
    # ``key:`` at the start of a line, or inside a flow mapping (``model: {endpoint: x}``).
    pattern = re.compile(rf"""(^|[\s{{,])["']?{re.escape(key)}["']?\s*:""")
    for number in range(start, len(lines)):
        if lines[number].lstrip().startswith(("```", "~~~")):
            break  # the block's closing fence: YAML and JSON lines never start so
        if pattern.search(lines[number]):
            return number + 1
    return start
