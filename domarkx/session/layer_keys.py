"""Turn layers' keys: the chain of what ran, as Docker's build cache keys its layers.

Layer 0 (after the setup script) is keyed by the setup script and the engine's
settings (engine, image, network, limits, environment, timeout, on_error); the
layer of message k by layer k-1's key and what message k ran (its runnable
blocks and tool calls, in order). Prose, model metadata and recorded outputs
are not in the key. Which runs use layers at all is ``enabled``'s to say.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from domarkx.data.digest import digest
from domarkx.data.models import CodeBlock, Message, OutputBlock, SessionSnapshot
from domarkx.errors import EngineError
from domarkx.execution.engine import Engine, canonical_language
from domarkx.session.blocks import runnable_blocks

ENV = "DOMARKX_LAYERS"
# The layout of a layer's key and record; another format is another key.
LAYER_FORMAT = 1


@dataclass(frozen=True)
class Step:
    """A message that ran something: where it is, its layer key, blocks up to it."""

    message: int
    key: str
    blocks: int  # runnable blocks in the messages up to and including this one


def enabled(snapshot: SessionSnapshot) -> bool:
    """Whether runs of ``snapshot`` use layers (``layers:``, ``DOMARKX_LAYERS``, checks)."""
    if os.environ.get(ENV, "").strip() in ("0", "false", "no", "off"):
        return False
    value = (snapshot.config().model_extra or {}).get("layers", True)
    if not isinstance(value, bool):
        raise EngineError(
            f"session-config `layers: {value}` is not true or false",
            file=snapshot.metadata.source_file,
            hint="write `layers: false` to run from scratch every time, or leave it out",
            key="layers",
        )
    return value and not has_checks(snapshot.conversation)


def has_checks(conversation: list[Message]) -> bool:
    return any(
        "expect" in block.flags
        for message in conversation
        if message.role == "user"
        for block in message.content
        if isinstance(block, CodeBlock)
    )


def base_key(snapshot: SessionSnapshot, engine: type[Engine]) -> str:
    """Layer 0's key: the setup script and the engine's settings."""
    config = snapshot.config()
    setup = snapshot.setup_script
    return digest(
        {
            "layers": LAYER_FORMAT,
            "setup": setup.model_dump() if setup is not None else None,
            "engine": engine.layer_settings(config),
            "on_error": config.on_error,
        }
    )


def ran_by(message: Message, block_refs: list[int]) -> dict[str, Any]:
    """What a message ran, as its layer key sees it: blocks and tool calls, in order."""
    blocks = []
    for index in block_refs:
        block = message.content[index]
        assert isinstance(block, CodeBlock)
        blocks.append([canonical_language(block.language) or block.language, block.code])
    calls = (message.message_metadata or {}).get("tool_calls") or []
    return {"blocks": blocks, "tool_calls": calls}


def chain(
    snapshot: SessionSnapshot, conversation: list[Message], engine: type[Engine] | Engine
) -> tuple[str, list[Step]]:
    """Layer 0's key and a step per message of ``conversation`` that ran something."""
    cls = engine if isinstance(engine, type) else type(engine)
    key = base_key(snapshot, cls)
    by_message: dict[int, list[int]] = {}
    for ref in runnable_blocks(conversation, engine):
        by_message.setdefault(ref.message, []).append(ref.index)
    steps = []
    count = 0
    for m, message in enumerate(conversation):
        refs = by_message.get(m, [])
        has_calls = bool((message.message_metadata or {}).get("tool_calls"))
        if not refs and not (message.role == "assistant" and has_calls):
            continue
        count += len(refs)
        key = digest({"parent": key, **ran_by(message, refs)})
        steps.append(Step(m, key, count))
    return base_key(snapshot, cls), steps


def outputs_of_blocks(
    conversation: list[Message], engine: Engine | type[Engine]
) -> Iterator[list[OutputBlock]]:
    """The outputs after each runnable block of ``conversation``, in order."""
    for ref in runnable_blocks(conversation, engine):
        outs: list[OutputBlock] = []
        for block in conversation[ref.message].content[ref.index + 1 :]:
            if not isinstance(block, OutputBlock):
                break
            outs.append(block)
        yield outs
