"""The assistant's loop: ask the model, run its code and its tool calls, feed the results back.

Independent of how instances are stored and which sandbox runs the code: the
caller passes ``execute`` (runs one code block, returns its output blocks),
``tools`` (the tools on offer and how to call them), ``on_change`` (saves
the instance; called after every change, so a crash or a failed call loses
nothing already done) and, optionally, ``on_outputs`` (told of each block's
outputs alone, so that saving a reply with N code blocks costs O(N), not
O(N²): the message is not saved again after every block).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from domarkx import overlap
from domarkx.data.models import CodeBlock, Message, ModelSettings, OutputBlock, TextBlock
from domarkx.errors import DomarkxError, LLMError
from domarkx.llm.messages import parse_reply, to_chat_messages
from domarkx.llm.provider import Provider, Stream, provider_for
from domarkx.llm.replay import ReplayCache
from domarkx.llm.reply import Reply, ToolCall, pending_calls, wants_reply
from domarkx.parsing.macro_links import escape_macros

Execute = Callable[[CodeBlock], list[OutputBlock] | None]
# Told that the outputs of block ``index`` of message ``message`` are now these.
OnOutputs = Callable[[int, int, list[OutputBlock]], None]


class ToolResultLike(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def is_error(self) -> bool: ...

    @property
    def final(self) -> bool: ...


class Tools(Protocol):
    """What the loop needs of the tools on offer (``domarkx.llm.tools.ToolBox``)."""

    def definitions(self) -> list[dict[str, Any]]:
        """The request's ``tools`` field; empty when none are offered."""
        ...

    def call(self, call: ToolCall, where: str) -> ToolResultLike:
        """Run one call; failures are results (``is_error``), never exceptions."""
        ...


def llm_turns(
    conversation: list[Message],
    settings: ModelSettings,
    *,
    front_matter: dict[str, Any],
    execute: Execute,
    on_change: Callable[[], None],
    cache: ReplayCache,
    context: str,
    stream: Stream | None = None,
    tools: Tools | None = None,
    refusal: LLMError | None = None,
    on_outputs: OnOutputs | None = None,
) -> list[str]:
    """Add the model's turns to ``conversation`` (in place); return the replay keys used.

    Calls the conversation ends with and that have no result yet run first. Then,
    while the conversation wants a reply and the last reply ran code or made
    calls, the model is asked (at most ``settings.max_turns`` times). Each reply
    is appended as an ``assistant`` message (its calls and what the server said
    in ``msg-metadata``); each of its code blocks is passed to ``execute`` in
    order, and the outputs it returns are inserted right after that block (None
    means the block is not runnable and is left alone; ``on_outputs``, when given,
    is told of them instead of ``on_change``); each of its tool calls runs in
    order and its result is appended as a ``tool`` message.

    ``refusal``, when given, is raised instead of any request that would reach the
    server (a recorded reply still replays): see ``domarkx.llm.endpoints``.

    ``context`` names the session in errors. On an error (a failed model call,
    ``ApprovalRequired``) the conversation keeps
    everything done before the failing call; ``on_change`` is called and the error
    re-raised, with the keys used so far in its ``llm_records`` attribute.
    """
    keys: list[str] = []
    index, waiting = pending_calls(conversation)
    if not waiting and not wants_reply(conversation):
        return keys
    try:
        provider = provider_for(settings, front_matter)
        provider.refusal = refusal
        if waiting and _answer_calls(conversation, index, waiting, tools, on_change):
            return keys
        offered = tools.definitions() if tools is not None else []
        for _ in range(settings.max_turns):
            messages = to_chat_messages(conversation)
            where = f"{context}, message {len(conversation) + 1} (assistant)"
            with overlap.waiting():  # other sessions of a build go on meanwhile
                reply, key = cache.complete(
                    provider, messages, context=where, stream=stream, tools=offered or None
                )
            if key is not None:
                keys.append(key)
            message = Message(
                role="assistant",
                content=list(parse_reply(reply.text)),
                message_metadata=reply_metadata(provider, reply, key),
            )
            conversation.append(message)
            on_change()
            ran = _run_code(conversation, len(conversation) - 1, execute, on_change, on_outputs)
            if reply.tool_calls:
                final = _answer_calls(
                    conversation, len(conversation) - 1, list(reply.tool_calls), tools, on_change
                )
                ran = not final  # attempt_completion: its result is the final answer
            if not ran:
                break
        else:
            # The last reply's code ran, so the model would be asked again: say why not.
            print(
                f"domarkx: warning: {context}: stopped after model.max_turns = "
                f"{settings.max_turns} model calls; the output of the last reply's code "
                "or tool calls was not sent back\n  hint: raise `model.max_turns` in session-config",
                file=sys.stderr,
            )
    except DomarkxError as error:  # a failed call, or code the user did not approve
        error.llm_records = keys  # type: ignore[attr-defined]
        on_change()
        raise
    return keys


def reply_metadata(provider: Provider, reply: Reply, key: str | None) -> dict[str, Any]:
    """The ``msg-metadata`` of a generated assistant message (spec 1.3), keys in this order."""
    metadata: dict[str, Any] = {}
    if reply.tool_calls:
        metadata["tool_calls"] = [call.flat() for call in reply.tool_calls]
    metadata.update(
        provider=provider.provider_name,
        model=reply.model or provider.model_name,
        finish_reason=reply.finish_reason,
        usage=reply.usage,
        replay_key=key,
    )
    if reply.thought:
        metadata["thought"] = reply.thought
    return metadata


def _answer_calls(
    conversation: list[Message],
    index: int,
    calls: list[ToolCall],
    tools: Tools | None,
    on_change: Callable[[], None],
) -> bool:
    """Run ``calls`` (of message ``index``) in order; append one ``tool`` message each.

    True when one of them ended the loop (``attempt_completion``): its ``tool``
    message says ``final: true``, and the conversation wants no reply after it.
    """
    final = False
    for call in calls:
        where = f"message {index + 1} (assistant), tool call {call.id} ({call.name})"
        ends = False
        if tools is None:
            text, is_error = f"unknown tool `{call.name}`; this session offers no tools", True
        else:
            result = tools.call(call, where)
            text, is_error, ends = result.text, result.is_error, result.final
            final = final or ends
        metadata: dict[str, Any] = {"tool_call_id": call.id, "name": call.name}
        if is_error:
            metadata["is_error"] = True
        if ends:
            metadata["final"] = True
        # Any text, a rendered session included, reads back the same: a macro in it stays
        # text, and the line ends a quoted block does not keep are not kept.
        text = escape_macros(text.rstrip("\n"))
        content: list[Any] = [TextBlock(value=text, quoted=True)] if text.strip() else []
        conversation.append(Message(role="tool", message_metadata=metadata, content=content))
        on_change()
    return final


def _run_code(
    conversation: list[Message],
    index: int,
    execute: Execute,
    on_change: Callable[[], None],
    on_outputs: OnOutputs | None,
) -> bool:
    """Run message ``index``'s code blocks in order, outputs inserted after each; True if any ran.

    ``on_outputs`` is told of every output block that now follows the block (as a
    journal replays them: they replace what followed it); without it, ``on_change``.
    """
    content = conversation[index].content
    ran = False
    i = 0
    while i < len(content):
        block = content[i]
        i += 1
        if not isinstance(block, CodeBlock):
            continue
        outputs = execute(block)
        if outputs is None:
            continue
        ran = True
        content[i:i] = outputs
        at = i - 1
        i += len(outputs)
        if on_outputs is None:
            on_change()
            continue
        end = i
        while end < len(content) and isinstance(content[end], OutputBlock):
            end += 1  # outputs that were there already (a reply that wrote some) stay
        on_outputs(index, at, [o for o in content[at + 1 : end] if isinstance(o, OutputBlock)])
    return ran
