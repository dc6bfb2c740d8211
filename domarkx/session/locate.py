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
from domarkx.parsing.fences import code_text, fence_end, open_fence, parse_info


def block_line(source: Path, block: CodeBlock) -> int | None:
    """The line (1-based) of ``block``'s opening fence in ``source``, if it is there."""
    try:
        lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    number = 0
    while number < len(lines):
        fence = open_fence(lines[number])
        if fence is None:
            number += 1
            continue
        end = fence_end(lines, number)
        closed = end - 1 > number and fence.closed_by(lines[end - 1])
        inner = lines[number + 1 : end - 1 if closed else end]
        same_language = not block.language or parse_info(fence.info).language == block.language
        if same_language and code_text([fence.content(line) for line in inner]) == block.code:
            return number + 1
        number = end
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
