"""The Provider interface: one model behind one chat-completions style call.

A provider is built from a session's ``model`` settings (and its front matter,
which the offline ``scripted`` provider reads its replies from) and answers a
list of OpenAI chat messages (and the tools on offer) with a ``Reply``: text,
tool calls, finish reason, usage, reasoning. Providers are found
through the ``domarkx.providers`` registry; a third-party provider subclasses
``Provider`` and registers an entry point.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

from domarkx import registry
from domarkx.data.models import ModelSettings
from domarkx.errors import LLMError
from domarkx.llm.reply import Reply

GROUP = "domarkx.providers"

# ``ModelSettings`` keys that are about reaching the server, not about what it answers;
# every other extra key is a generation parameter (sent to the model, part of the replay key).
TRANSPORT_KEYS = frozenset({"timeout"})

Stream = Callable[[str], None]


class ReplyEvents:
    """What a terminal shows of a model call besides the reply's text (``domarkx chat``).

    Set for the calls of one thread with ``events.set(...)``; providers and the
    replay cache tell it, when set, that a request went out (``asking``: a spinner
    until the first token), a piece of reasoning arrived (``thought``), or the
    reply comes from a replay record (``replayed``). The defaults do nothing.
    """

    def asking(self, model: str | None) -> None:
        """A request is sent to the model server; its reply has not started."""

    def thought(self, text: str) -> None:
        """A piece of the reply's reasoning (``reasoning_content``)."""

    def replayed(self) -> None:
        """The reply about to be streamed comes from a replay record."""


# The events of the calls made in this context (None: nobody watches, as in a build).
events: ContextVar[ReplyEvents | None] = ContextVar("domarkx_reply_events", default=None)


class Provider(abc.ABC):
    """One model. Subclasses implement ``complete``; ``offline`` ones skip the replay cache."""

    # True for providers that are deterministic and reach no network (no record needed).
    offline: ClassVar[bool] = False
    # Set when the user's configuration does not let this request out (a key not granted
    # to the server): raised in place of calling ``complete`` (domarkx.llm.endpoints).
    refusal: LLMError | None = None

    def __init__(self, settings: ModelSettings, front_matter: dict[str, Any] | None = None) -> None:
        # The session's `model` settings and its front matter (`metadata.user_metadata`).
        self.settings = settings
        self.front_matter = dict(front_matter or {})

    @property
    def provider_name(self) -> str:
        """The registry name this provider was asked for (part of the replay key)."""
        return self.settings.provider

    @property
    def model_name(self) -> str | None:
        """The model name sent to the server (part of the replay key)."""
        return self.settings.name

    def params(self) -> dict[str, Any]:
        """Generation parameters sent with every request (part of the replay key)."""
        extra = {
            k: v for k, v in (self.settings.model_extra or {}).items() if k not in TRANSPORT_KEYS
        }
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        return dict(sorted(extra.items()))

    @abc.abstractmethod
    def complete(
        self,
        messages: list[dict[str, Any]],
        stream: Stream | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """Answer ``messages`` (OpenAI chat message dicts: ``role``, ``content`` and, for
        tool calls, ``tool_calls``/``tool_call_id``) with the assistant's reply.

        ``tools`` are the chat-completions tool definitions on offer (``{"type":
        "function", "function": {name, description, parameters}}``), or None.
        ``stream``, when given, receives the reply's text in chunks as it arrives;
        the joined chunks equal ``Reply.text``. Failures raise ``LLMError``. (A
        plugin that returns a plain ``str`` is read as a text reply.)
        """


def provider_class(name: str) -> type[Provider]:
    """The provider registered as ``name`` (the registry reports unknown or broken ones)."""
    cls: type[Provider] = registry.load(GROUP, name)
    return cls


def provider_for(settings: ModelSettings, front_matter: dict[str, Any] | None = None) -> Provider:
    """Build the provider that ``settings.provider`` names."""
    return provider_class(settings.provider)(settings, front_matter)
