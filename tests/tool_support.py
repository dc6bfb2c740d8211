"""What the built-in tool tests share: the older documents and the tool results of a session."""

from __future__ import annotations

from pathlib import Path

# Documents written by older domarkx versions, each named <name>-<commit of that version>.md.
OLDER = Path(__file__).parent / "data" / "older"


def tool_results(text: str) -> list[str]:
    """The text of each ``## tool`` message (after its metadata block)."""
    return [
        part.split("```\n", 1)[1].split("\n## ", 1)[0].strip() for part in text.split("## tool")[1:]
    ]
