"""The block rules of a run: which blocks run, where their outputs go, how to name one.

Spec section 1.4: an assistant's code blocks run unless marked ``norun``; any
other role's only when marked ``run``. A block's outputs follow it in its
message (stdout always, stderr when not empty), replacing the outputs an
earlier run left there.

A "no" lasts (tools-chat-trust spec, section 3): a block whose output says it
was refused ("not run", ``OutputBlock.refused``) is not run again, under any
grant, until that output is deleted or the code changes (the refusal records
the digest of the code it refused, ``code_sha256``). And code a model wrote
keeps its provenance: the blocks of an ``assistant`` message that a model
produced (its ``msg-metadata`` says which server answered) need the same grant
when read back from a document as when the model first sent them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from domarkx.data.models import (
    NOT_RUN,
    NOT_RUN_BY_CONFIG,
    CodeBlock,
    Message,
    OutputBlock,
    SessionInstance,
)
from domarkx.execution.engine import BlockResult, Engine, canonical_language
from domarkx.session.approval import Approval, ApprovalRequired, CodeRequest
from domarkx.session.locate import block_line

# The attribute of a refusal's output fence: the digest of the code it refused.
REFUSED_CODE = "code_sha256"
# ``msg-metadata`` keys that only a reply from a model server gets (spec 1.3, 1.2).
MODEL_KEYS = ("provider", "model", "replay_key", "finish_reason", "tool_calls")


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


def code_digest(code: str) -> str:
    """What a refusal remembers of the code it refused: enough to see it changed."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def outputs_of(
    result: BlockResult, language: str = "text", code: str | None = None
) -> list[OutputBlock]:
    """The output blocks recorded for one block: stdout always, stderr when not empty.

    A refused block (``BlockResult.refused``) records one output that says so,
    with the digest of its ``code`` when given.
    """
    if result.refused:
        attrs = {REFUSED_CODE: code_digest(code)} if code is not None else {}
        return [
            OutputBlock(
                stream="stdout", text=result.stdout, exit_code=None, refused=True, attrs=attrs
            )
        ]
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


def model_written(message: Message) -> bool:
    """Whether a model produced ``message``: an assistant message whose ``msg-metadata``
    holds what only a model server's reply gets (domarkx wrote it when appending)."""
    metadata = message.message_metadata or {}
    return message.role == "assistant" and any(k in metadata for k in MODEL_KEYS)


def refused_before(message: Message, index: int) -> OutputBlock | None:
    """The refusal that still holds for code block ``index`` of ``message``, if any.

    It holds while the block's outputs include a "not run" output whose code
    digest is the block's (or has none: written before digests were kept).
    """
    block = message.content[index]
    if not isinstance(block, CodeBlock):
        return None
    digest: str | None = None
    for output in message.content[index + 1 :]:
        if not isinstance(output, OutputBlock):
            break
        if output.refused:
            digest = digest or code_digest(block.code)
            if output.attrs.get(REFUSED_CODE, digest) == digest:
                return output
    return None


def not_run(mode: str) -> BlockResult:
    """The result of code refused under approval ``mode``: ``never`` is the configuration's
    refusal, any other the user's answer."""
    return BlockResult.not_run(NOT_RUN_BY_CONFIG if mode == "never" else NOT_RUN)


def granted(
    approval: Approval,
    instance: SessionInstance,
    sandbox: Engine,
    ref: BlockRef,
    source: str,
    root: str | Path,
) -> bool:
    """Whether ``approval`` lets a model's block, read back from document ``source``, run.

    The rule of the model's own code (``Approval.decide``); without a way to ask,
    the error names the block's line and the instance that keeps the run.
    """
    block = instance.conversation[ref.message].content[ref.index]
    assert isinstance(block, CodeBlock)
    language = canonical_language(block.language) or block.language
    where = describe_block(instance.conversation, ref)
    request = CodeRequest(source, where, sandbox.name, language, block.code)
    try:
        return approval.decide(request, isolated=sandbox.isolated)
    except ApprovalRequired as err:
        err.line = block_line(Path(root) / source, block)
        short = instance.instance_id[:12]
        err.hint = f"{err.hint}; instance {short} keeps the run (`domarkx export {short}`)"
        raise
