"""The assistant's code loop: ask the model, run its code, feed the output back.

Independent of how instances are stored and which sandbox runs the code: the
caller passes ``execute`` (runs one code block, returns its output blocks) and
``on_change`` (saves the instance; called after every change, so a crash or a
failed call loses nothing already done).
"""

from __future__ import annotations

from collections.abc import Callable

from domarkx.data.models import CodeBlock, Message, ModelSettings, OutputBlock
from domarkx.errors import LLMError
from domarkx.llm.messages import parse_reply, to_chat_messages
from domarkx.llm.provider import Stream, provider_for
from domarkx.llm.replay import ReplayCache

Execute = Callable[[CodeBlock], list[OutputBlock] | None]


def wants_reply(conversation: list[Message]) -> bool:
    """Whether the conversation is a question waiting for an answer (ends with ``user``)."""
    return bool(conversation) and conversation[-1].role == "user"


def llm_turns(
    conversation: list[Message],
    settings: ModelSettings,
    *,
    front_matter: dict,
    execute: Execute,
    on_change: Callable[[], None],
    cache: ReplayCache,
    context: str,
    stream: Stream | None = None,
) -> list[str]:
    """Add the model's turns to ``conversation`` (in place); return the replay keys used.

    While the conversation wants a reply, or the last reply's code ran, the model
    is asked (at most ``settings.max_turns`` times). Each reply is appended as an
    ``assistant`` message; each of its code blocks is passed to ``execute`` in
    order, and the outputs it returns are inserted right after that block (None
    means the block is not runnable and is left alone). The loop stops at a reply
    with no runnable code.

    ``context`` names the session in errors. On an LLMError the conversation keeps
    everything done before the failing call; ``on_change`` is called and the error
    re-raised, with the keys used so far in its ``llm_records`` attribute.
    """
    keys: list[str] = []
    if not wants_reply(conversation):
        return keys
    try:
        provider = provider_for(settings, front_matter)
        for _ in range(settings.max_turns):
            messages = to_chat_messages(conversation)
            where = f"{context}, message {len(conversation) + 1} (assistant)"
            reply, key = cache.complete(provider, messages, context=where, stream=stream)
            if key is not None:
                keys.append(key)
            message = Message(role="assistant", content=list(parse_reply(reply)))
            conversation.append(message)
            on_change()
            if not _run_code(message, execute, on_change):
                break
    except LLMError as error:
        error.llm_records = keys  # type: ignore[attr-defined]
        on_change()
        raise
    return keys


def _run_code(message: Message, execute: Execute, on_change: Callable[[], None]) -> bool:
    """Run the message's code blocks in order, outputs inserted after each; True if any ran."""
    ran = False
    i = 0
    while i < len(message.content):
        block = message.content[i]
        i += 1
        if not isinstance(block, CodeBlock):
            continue
        outputs = execute(block)
        if outputs is None:
            continue
        ran = True
        message.content[i:i] = outputs
        i += len(outputs)
        on_change()
    return ran
