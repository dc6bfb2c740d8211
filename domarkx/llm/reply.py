"""What a model answers: text, tool calls, and what the server said about the answer.

A provider returns a ``Reply``; the replay cache stores it (``to_record``) and
gives it back (``from_record``) unchanged, so a replayed run writes the same
``msg-metadata`` as the recorded one. Whether a conversation waits for the
model (``needs_model``) is read from the same records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domarkx.data.models import Message


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: ``arguments`` is the JSON text it sent, as sent."""

    id: str
    name: str
    arguments: str = "{}"

    def flat(self) -> dict[str, str]:
        """The form ``msg-metadata`` keeps: ``{"id", "name", "arguments"}``."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    def openai(self) -> dict[str, Any]:
        """The chat-completions form, as sent back to the model."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Reply:
    """One model answer. ``usage`` holds ``prompt_tokens``/``completion_tokens`` when sent."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    thought: str | None = None  # the server's ``reasoning_content``
    model: str | None = None  # the model that answered, as the server names it

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict for the replay record (format 2)."""
        record: dict[str, Any] = {"text": self.text}
        if self.tool_calls:
            record["tool_calls"] = [c.flat() for c in self.tool_calls]
        for key in ("finish_reason", "usage", "thought", "model"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return record

    @classmethod
    def from_record(cls, data: Any) -> Reply:
        """A reply from a record: a dict (format 2) or the text alone (format 1)."""
        if isinstance(data, str):
            return cls(text=data)
        if not isinstance(data, dict) or not isinstance(data.get("text", ""), str):
            raise ValueError("`reply` is neither text nor a reply object")
        calls = tuple(parse_call(c) for c in data.get("tool_calls") or [])
        usage = data.get("usage")
        return cls(
            text=data.get("text", ""),
            tool_calls=calls,
            finish_reason=data.get("finish_reason"),
            usage=ordered_usage(usage) if isinstance(usage, dict) else None,
            thought=data.get("thought"),
            model=data.get("model"),
        )


USAGE_KEYS = ("prompt_tokens", "completion_tokens")


def ordered_usage(usage: dict[str, Any]) -> dict[str, int] | None:
    """The token counts in one order (records sort keys; exports must not change)."""
    found = {k: usage[k] for k in USAGE_KEYS if isinstance(usage.get(k), int)}
    return found or None


def as_reply(value: Reply | str) -> Reply:
    """A provider's answer as a ``Reply`` (a plugin written for text-only replies returns str)."""
    return value if isinstance(value, Reply) else Reply(text=value, finish_reason="stop")


def parse_call(item: Any) -> ToolCall:
    """A call in any form a session holds: flat, OpenAI (``function``), or the older format's.

    Arguments that are not a string (a hand-written object) are kept as their JSON text.
    """
    if not isinstance(item, dict):
        raise ValueError(f"a tool call must be an object, not {type(item).__name__}")
    function = item.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments", "{}")
    else:
        name, arguments = item.get("name"), item.get("arguments", "{}")
    if not isinstance(name, str) or "id" not in item:
        raise ValueError("a tool call needs an `id` and a `name`")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=str(item["id"]), name=name, arguments=arguments)


def calls_in(metadata: dict[str, Any] | None) -> list[ToolCall]:
    """The tool calls an assistant message's ``msg-metadata`` holds (any accepted form)."""
    if not metadata:
        return []
    items = metadata.get("tool_calls")
    if not isinstance(items, list):
        items = metadata.get("content")
    if not isinstance(items, list):
        return []
    calls = []
    for item in items:
        try:
            calls.append(parse_call(item))
        except ValueError:
            continue
    return calls


def answered_ids(metadata: dict[str, Any] | None) -> list[str]:
    """The call ids a ``tool`` message's ``msg-metadata`` answers (flat or older format)."""
    if not metadata:
        return []
    if metadata.get("tool_call_id"):
        return [str(metadata["tool_call_id"])]
    items = metadata.get("content")
    if isinstance(items, list):
        return [str(i["call_id"]) for i in items if isinstance(i, dict) and i.get("call_id")]
    return []


def wants_reply(conversation: list[Message]) -> bool:
    """Whether the conversation waits for the model: it ends with ``user`` or a ``tool`` result.

    Not after the final answer: a ``tool`` result of ``attempt_completion``
    (``final: true`` in its metadata) among the results it ends with.
    """
    if not conversation or conversation[-1].role not in ("user", "tool"):
        return False
    for message in reversed(conversation):
        if message.role != "tool":
            break
        if (message.message_metadata or {}).get("final") is True:
            return False
    return True


def pending_calls(conversation: list[Message]) -> tuple[int, list[ToolCall]]:
    """The last assistant message's calls that no ``tool`` message after it answers.

    Returns the message's index and the calls, in order; ``(-1, [])`` when nothing
    waits (a message other than ``tool`` after it means the calls were left behind).
    """
    for index in range(len(conversation) - 1, -1, -1):
        message = conversation[index]
        if message.role == "tool":
            continue
        if message.role != "assistant":
            return -1, []
        answered = {i for m in conversation[index + 1 :] for i in answered_ids(m.message_metadata)}
        calls = [c for c in calls_in(message.message_metadata) if c.id not in answered]
        return (index, calls) if calls else (-1, [])
    return -1, []


def needs_model(conversation: list[Message]) -> bool:
    """Whether a run would ask the model (or run calls it left): a reply is wanted."""
    return wants_reply(conversation) or bool(pending_calls(conversation)[1])
