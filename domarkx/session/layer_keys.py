"""Turn layers' keys: the chain of what ran, as Docker's build cache keys its layers.

Layer 0 (after the setup script) is keyed by the setup script and the engine's
settings (engine, image, network, limits, environment, timeout, on_error); the
layer of message k by layer k-1's key and what message k ran (its runnable
blocks and tool calls, in order). Prose, model metadata and recorded outputs
are not in the key. Which runs use layers at all is ``enabled``'s to say.

What did not run is in the key too: a block whose "not run" output still holds
(``blocks.refused_before``), a model's block the configuration refuses
(``approve = "never"`` on an engine that does not isolate it), a tool call
whose result says "not run". So a layer saved by a run where that code ran
never matches a document where it did not: its outputs and its state never
stand in for a refusal.

A run with checks (``expect`` blocks) runs the ``sh`` and ``python`` checks of
a turn in the sandbox once the turn is over, before the next code: what they
do is part of the sandbox, so their code is in the key of the first message
that runs after them (``checks=True``; the other kinds read only the
conversation and are not). A run without checks (``chat``) has other keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from domarkx.data.digest import digest
from domarkx.data.models import (
    NOT_RUN_TEXTS,
    CodeBlock,
    Message,
    OutputBlock,
    SessionSnapshot,
    TextBlock,
)
from domarkx.errors import DomarkxError, EngineError
from domarkx.execution.engine import Engine, canonical_language
from domarkx.session.blocks import model_written, refused_before, runnable_blocks

ENV = "DOMARKX_LAYERS"
# The layout of a layer's key and record; another format is another key.
LAYER_FORMAT = 1
# The checks that run in the sandbox (``checks.evaluate``): they are in the keys.
SANDBOX_KINDS = ("sh", "python")
# What a block or tool call that did not run adds to its entry in the key.
NOT_RUN_MARK = "not run"


@dataclass(frozen=True)
class Step:
    """A message that ran something: where it is, its layer key, blocks up to it."""

    message: int
    key: str
    blocks: int  # runnable blocks in the messages up to and including this one


def enabled(snapshot: SessionSnapshot) -> bool:
    """Whether runs of ``snapshot`` use layers (``layers:``, ``DOMARKX_LAYERS``)."""
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
    return value


def has_checks(snapshot: SessionSnapshot) -> bool:
    """Whether a user message of ``snapshot`` has an expect block (a run checks it)."""
    return any(
        "expect" in block.flags
        for message in snapshot.conversation
        if message.role == "user"
        for block in message.content
        if isinstance(block, CodeBlock)
    )


def turn_end(conversation: list[Message], user: int) -> int | None:
    """The index of the user message after ``user`` (its turn ends there); None: the last."""
    return next(
        (i for i in range(user + 1, len(conversation)) if conversation[i].role == "user"), None
    )


def sandbox_checks(conversation: list[Message]) -> dict[int, list[list[str]]]:
    """The ``sh`` and ``python`` checks of each user message whose turn ends before the
    end, by the index where it ends: ``[kind, code]`` in order (an expect block that does
    not read is kept whole, so any change to it is a change of key)."""
    # reason: reading expect blocks loads PyYAML (~25 ms), for runs with checks only
    from domarkx.checks.spec import expect_blocks, parse_expect

    found: dict[int, list[list[str]]] = {}
    for m, _, block in expect_blocks(conversation):
        end = turn_end(conversation, m)
        if end is None:
            continue
        try:
            expect = parse_expect(block, file="", line=None)
            checks = [[c.kind, str(c.arg)] for c in expect.checks if c.kind in SANDBOX_KINDS]
        except DomarkxError:
            checks = [["expect", block.code]]
        found.setdefault(end, []).extend(checks)
    return found


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


def not_run_blocks(
    conversation: list[Message], engine: type[Engine] | Engine, *, never: bool = False
) -> list[bool]:
    """For each runnable block of ``conversation``, in order: whether it will not run.

    A "not run" output that still holds keeps it unrun; ``never`` (the run's grant is
    ``approve = "never"``) keeps a model's block unrun where the engine does not isolate it.
    """
    refuses_model = never and not engine.isolated
    flags = []
    for ref in runnable_blocks(conversation, engine):
        message = conversation[ref.message]
        flags.append(
            refused_before(message, ref.index) is not None
            or (refuses_model and model_written(message))
        )
    return flags


def refused_calls(conversation: list[Message], m: int) -> list[str]:
    """The ids of message ``m``'s tool calls whose result says "not run"."""
    ids = {str(c.get("id")) for c in tool_calls(conversation[m]) if isinstance(c, dict)}
    found = []
    for message in conversation[m + 1 :]:
        if message.role != "tool":
            break
        call = str((message.message_metadata or {}).get("tool_call_id"))
        text = "".join(b.value for b in message.content if isinstance(b, TextBlock)).strip()
        if call in ids and text in NOT_RUN_TEXTS:
            found.append(call)
    return sorted(found)


def tool_calls(message: Message) -> list[Any]:
    calls = (message.message_metadata or {}).get("tool_calls") or []
    return list(calls) if isinstance(calls, list) else []


def ran_by(
    message: Message,
    block_refs: list[int],
    not_run: list[bool] | None = None,
    calls_not_run: list[str] | None = None,
) -> dict[str, Any]:
    """What a message ran, as its layer key sees it: blocks and tool calls, in order.

    A block that did not run (``not_run``, by block) and the tool calls whose result
    says "not run" (``calls_not_run``) are marked; a message where everything ran
    keeps the key it always had.
    """
    blocks = []
    for n, index in enumerate(block_refs):
        block = message.content[index]
        assert isinstance(block, CodeBlock)
        entry = [canonical_language(block.language) or block.language, block.code]
        if not_run is not None and not_run[n]:
            entry.append(NOT_RUN_MARK)
        blocks.append(entry)
    ran: dict[str, Any] = {
        "blocks": blocks,
        "tool_calls": (message.message_metadata or {}).get("tool_calls") or [],
    }
    if calls_not_run:
        ran[NOT_RUN_MARK] = calls_not_run
    return ran


def chain(
    snapshot: SessionSnapshot,
    conversation: list[Message],
    engine: type[Engine] | Engine,
    *,
    never: bool = False,
    checks: bool = False,
) -> tuple[str, list[Step]]:
    """Layer 0's key and a step per message of ``conversation`` that ran something.

    ``never``: the run's grant refuses model-written code (``approve = "never"``).
    ``checks``: the run runs the session's checks (the sandbox ones are in the keys).
    """
    cls = engine if isinstance(engine, type) else type(engine)
    key = base_key(snapshot, cls)
    by_message: dict[int, list[int]] = {}
    unrun: dict[int, list[bool]] = {}
    refs = list(runnable_blocks(conversation, engine))
    for ref, flag in zip(refs, not_run_blocks(conversation, cls, never=never), strict=True):
        by_message.setdefault(ref.message, []).append(ref.index)
        unrun.setdefault(ref.message, []).append(flag)
    checked = sandbox_checks(conversation) if checks else {}
    steps = []
    count = 0
    waiting: list[list[str]] = []  # sandbox checks run since the last step
    for m, message in enumerate(conversation):
        waiting += checked.get(m, [])
        indexes = by_message.get(m, [])
        has_calls = bool(tool_calls(message))
        if not indexes and not (message.role == "assistant" and has_calls):
            continue
        count += len(indexes)
        calls_not_run = refused_calls(conversation, m) if has_calls else []
        ran = ran_by(message, indexes, unrun.get(m), calls_not_run)
        if waiting:
            ran["checks"] = waiting
            waiting = []
        key = digest({"parent": key, **ran})
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
