"""The block rules of a run: which blocks run, where their outputs go, how to name one.

Spec section 1.4: an assistant's code blocks run unless marked ``norun``; any
other role's only when marked ``run``. A block's outputs follow it in its
message (stdout always, stderr when not empty), replacing the outputs an
earlier run left there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from domarkx.data.models import CodeBlock, Message, OutputBlock
from domarkx.execution.engine import BlockResult, Engine


def now() -> str:
    """The time stamps of an instance: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class BlockRef:
    """Where a runnable block sits: message index and content index."""

    message: int
    index: int


def runnable(role: str, block: CodeBlock, engine: type[Engine] | Engine) -> bool:
    """Spec 1.4: assistant blocks run unless ``norun``; others only with ``run``."""
    if "norun" in block.flags:
        return False
    if role != "assistant" and "run" not in block.flags:
        return False
    if "run" in block.flags:
        return True
    return engine.supports(block.language) if block.language else False


def runnable_blocks(
    conversation: list[Message], engine: type[Engine] | Engine
) -> Iterator[BlockRef]:
    """Runnable blocks in order, read lazily: running a block inserts output blocks."""
    m = 0
    while m < len(conversation):
        message = conversation[m]
        i = 0
        while i < len(conversation[m].content):
            block = conversation[m].content[i]
            if isinstance(block, CodeBlock) and runnable(message.role, block, engine):
                yield BlockRef(m, i)
            i += 1
        m += 1


def as_fence_text(text: str) -> str:
    """Output as a fenced block can hold it: lines end in ``\n`` (a document reads a
    ``\r`` as a line end), and the final newline belongs to the fence.

    Stored this way, importing an export (or a chat's appended turn) gives back
    exactly the instance's outputs.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:-1] if text.endswith("\n") else text


def outputs_of(result: BlockResult, language: str = "text") -> list[OutputBlock]:
    """The output blocks recorded for one block: stdout always, stderr when not empty.

    A refused block (``BlockResult.refused``) records one output that says so.
    """
    if result.refused:
        return [OutputBlock(stream="stdout", text=result.stdout, exit_code=None, refused=True)]
    blocks = [
        OutputBlock(
            stream="stdout",
            text=as_fence_text(result.stdout),
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration=round(result.duration, 6),
            language=language,
        )
    ]
    if result.stderr:
        blocks.append(
            OutputBlock(stream="stderr", text=as_fence_text(result.stderr), language=language)
        )
    return blocks


def attach_outputs(message: Message, index: int, outputs: list[OutputBlock]) -> Message:
    """``message`` with the outputs after block ``index`` replaced by ``outputs``."""
    return message.with_outputs(index, outputs)


def describe_block(conversation: list[Message], ref: BlockRef) -> str:
    """How messages name a block: ``message 3 (assistant), code block 2 `name```."""
    block = conversation[ref.message].content[ref.index]
    role = conversation[ref.message].role
    name = f" `{block.name}`" if isinstance(block, CodeBlock) and block.name else ""
    number = sum(
        isinstance(b, CodeBlock) for b in conversation[ref.message].content[: ref.index + 1]
    )
    return f"message {ref.message + 1} ({role}), code block {number}{name}"
