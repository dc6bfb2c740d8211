"""Where in the source: the ``file:line`` of a code block or a session-config key.

Snapshots do not keep line numbers (they would change a snapshot's id on
every edit above a block), so the line is found when an error needs it:
the fence whose body is the block's code, the first such one in the file.
A block that came from an include or a macro is not in the source; then
there is no line, and the message names the block by its position.
"""

from __future__ import annotations

from pathlib import Path

from domarkx.data.models import CodeBlock, Message, OutputBlock
from domarkx.errors import DomarkxError
from domarkx.parsing.blocks import FencedCode, blocks
from domarkx.parsing.fences import parse_info
from domarkx.parsing.source import split_front_matter
from domarkx.session.legacy import config_key_line, layout_of, read_source


def block_line(source: Path, block: CodeBlock) -> int | None:
    """The line (1-based) of ``block``'s opening fence in ``source``, if it is there."""
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


def config_line(root: str | Path, source_file: str, key: str) -> int | None:
    """The line of ``key`` in the session-config of ``source_file``, read again from disk.

    None when the document cannot be read; the block's own line when the key is not in it.
    """
    text = read_source(Path(root), source_file)
    return config_key_line(text, key) if text is not None else None


def setup_line(root: str | Path, source_file: str) -> int | None:
    """The line of the setup-script's opening fence in ``source_file`` (None: not there)."""
    text = read_source(Path(root), source_file)
    if text is None:
        return None
    setup = layout_of(text).setup
    return setup[0] + 1 if setup is not None else None


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
