"""Where a code block sits in its source document: ``file:line`` for error messages.

Snapshots do not keep line numbers (they would change a snapshot's id on
every edit above a block), so the line is found when an error needs it:
the fence whose body is the block's code, the first such one in the file.
A block that came from an include or a macro is not in the source; then
there is no line, and the message names the block by its position.
"""

from __future__ import annotations

from pathlib import Path

from domarkx.data.models import CodeBlock, Message, OutputBlock
from domarkx.parsing.fences import parse_info


def block_line(source: Path, block: CodeBlock) -> int | None:
    """The line (1-based) of ``block``'s opening fence in ``source``, if it is there."""
    from domarkx.errors import DomarkxError
    from domarkx.parsing.blocks import FencedCode, blocks
    from domarkx.parsing.source import split_front_matter

    try:
        text = source.read_text(encoding="utf-8", errors="replace")
        _, lines, _ = split_front_matter(text, str(source))
    except (OSError, DomarkxError):
        return None
    for found in blocks(lines):
        if (
            isinstance(found, FencedCode)
            and found.code == block.code
            and (not block.language or parse_info(found.info).language == block.language)
        ):
            return found.start + 1
    return None


def failed_block(conversation: list[Message]) -> tuple[int, CodeBlock, OutputBlock] | None:
    """The first code block whose output says it failed or timed out.

    Its message's index, the block, and the output that says so.
    """
    for m, message in enumerate(conversation):
        last_code: CodeBlock | None = None
        for block in message.content:
            if isinstance(block, CodeBlock):
                last_code = block
            elif (
                isinstance(block, OutputBlock)
                and block.stream == "stdout"
                and (block.timed_out or block.exit_code not in (0, None))
                and last_code is not None
            ):
                return m, last_code, block
    return None
