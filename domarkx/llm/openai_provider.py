"""Any server that speaks the OpenAI chat-completions protocol, through the ``openai`` package.

OpenAI itself, DeepSeek, OpenRouter, vLLM, llama.cpp's server, Ollama: set
``base_url`` and ``name`` in ``model``. The ``openai`` package is an optional
extra (``pip install 'domarkx[openai]'``) and is imported only when a model is
called, so the command starts fast without it.

Retries are the client's own (``max_retries``): 408, 409, 429, 5xx, timeouts
and connection failures are retried ``DOMARKX_LLM_RETRIES`` times (default 4)
with its exponential backoff (0.5 s doubled, at most 8 s, with jitter), or
after the delay the server asks for in ``retry-after-ms`` / ``retry-after``.
Each retry is told on stderr (``RetryNotes``, a filter on the client's
logger), so a run waiting on a server that is down never looks hung.

Only a complete reply is a reply (tools-chat-trust spec, section 1.2): a
stream that ends without a ``finish_reason`` (cut off, not server-sent
events), an event that is not JSON, or a body that is not the protocol's JSON
(an HTML page with status 200) is retried as the client retries, then raised
as one ``LLMError``; it is never returned, so never appended nor recorded.
``model.timeout`` bounds the whole reply, not only the gap between bytes, and
a reply larger than ``MAX_REPLY_BYTES`` is refused.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import Any

from domarkx.errors import LLMError
from domarkx.llm.openai_errors import RetryNotes, asking, cause, hint_for, server_message
from domarkx.llm.provider import Provider, Stream, events
from domarkx.llm.reply import Reply, ToolCall

DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 120.0
# Local servers (llama.cpp, Ollama, vLLM) want no key, but the client insists on one.
PLACEHOLDER_KEY = "no-key"
# A reply's text, reasoning and tool-call arguments together, at most (10 MB).
MAX_REPLY_BYTES = 10 * 1024 * 1024
# The client's backoff, for the retries of a broken reply: 0.5 s doubled, at most 8 s.
_BACKOFF_START, _BACKOFF_MAX = 0.5, 8.0


def _env_number(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise LLMError(
            f"{name}={raw!r} is not a number", hint=f"unset {name} or give a number"
        ) from None
    if value < 0:
        raise LLMError(f"{name}={raw!r} is negative", hint=f"unset {name} or give a number >= 0")
    return value


def retries() -> int:
    """How many times a transient failure is retried (``DOMARKX_LLM_RETRIES``)."""
    return int(_env_number("DOMARKX_LLM_RETRIES", DEFAULT_RETRIES, int))


def _import_openai() -> Any:
    try:
        # reason: an optional dependency (domarkx[openai]), and ~500 ms CPU to import
        import openai
    except ImportError:
        raise LLMError(
            "the openai provider needs the openai package",
            hint="pip install 'domarkx[openai]'",
        ) from None
    return openai


class _Transient(Exception):
    """A failure the client retried; ``error`` is what the user sees once none succeeded."""

    def __init__(self, error: LLMError) -> None:
        super().__init__(error.message)
        self.error = error


class OpenAIProvider(Provider):
    """A chat-completions server reached with the official ``openai`` client."""

    def api_key(self) -> str:
        """The key from ``settings.api_key_env``; a placeholder when no variable is named."""
        variable = self.settings.api_key_env
        if variable is None:
            return PLACEHOLDER_KEY
        key = os.environ.get(variable, "").strip()
        if not key:
            where = (
                f"`api_key_env` of [endpoints.{self.settings.endpoint}] in domarkx.toml"
                if self.settings.endpoint is not None
                else "`model.api_key_env` in session-config"
            )
            raise LLMError(
                f"the API key variable {variable} is not set (model {self.settings.name!r})",
                hint=f"export {variable}=<your key>, or change {where}",
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise LLMError(
                f"the API key in {variable} holds a control character (a line break?)",
                hint=f"export {variable} again with the key alone",
            )
        return key

    def withheld_headers(self, openai: Any) -> dict[str, Any]:
        """Headers the ``openai`` package fills from the environment, left out here.

        It sends ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and every header of
        ``OPENAI_CUSTOM_HEADERS`` to whatever ``base_url`` it is given. They go
        where the key goes: to an endpoint the project's configuration grants a key
        (domarkx.llm.endpoints), never to a server a document named without one.
        """
        if self.settings.api_key_env is not None:
            return {}
        names = ["OpenAI-Organization", "OpenAI-Project"]
        for line in os.environ.get("OPENAI_CUSTOM_HEADERS", "").split("\n"):
            name, colon, _ = line.partition(":")
            if colon and name.strip():
                names.append(name.strip())
        # The key's own header is the client's to set (to the placeholder here).
        return {name: openai.Omit() for name in names if name.lower() != "authorization"}

    def timeout(self) -> float:
        """Seconds one request may take (``model.timeout``, default 120)."""
        value = (self.settings.model_extra or {}).get("timeout", DEFAULT_TIMEOUT)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise LLMError(
                f"model.timeout {value!r} is not a number of seconds",
                hint="set `model.timeout` in session-config to a number",
            ) from None

    def complete(
        self,
        messages: list[dict[str, Any]],
        stream: Stream | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """Ask the server; the client retries transient failures (and says so on stderr)."""
        if not self.settings.name:
            raise LLMError(
                "the openai provider needs a model name",
                hint="set `model.name` in session-config (for example `name: gpt-4o-mini`)",
            )
        openai = _import_openai()
        attempts = retries() + 1
        try:
            client = _client(
                openai,
                self.api_key(),
                self.settings.base_url,
                self.timeout(),
                self.withheld_headers(openai),
                attempts - 1,
            )
        except (ValueError, TypeError) as err:  # the client refuses a header or the URL
            raise LLMError(
                f"the openai client cannot be set up: {err}",
                hint="check `model.base_url`, and OPENAI_CUSTOM_HEADERS in your environment",
            ) from None
        RetryNotes.install()
        where = asking.where = str(client.base_url).rstrip("/")
        asking.cause = "no answer"
        asking.tries = 1
        try:
            broken = 0
            while True:
                try:
                    return self._once(openai, client, messages, stream, tools)
                except _Broken as failure:
                    # The client retries what it sees fail; a broken reply came with
                    # status 200, so it is asked again here, with the client's backoff.
                    broken += 1
                    if broken >= attempts:
                        raise _Transient(failure.error) from None
                    delay = min(_BACKOFF_START * 2 ** (broken - 1), _BACKOFF_MAX)
                    delay *= 1 - 0.25 * random.random()
                    print(
                        f"domarkx: the model server at {where}: {failure.reason}; nothing of it "
                        f"is kept; retrying in {delay:.2g} s (try {broken + 1} of {attempts})",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(delay)
                    asking.tries += 1
        except _Transient as failure:
            tries = int(getattr(asking, "tries", attempts))
            note = f" (tried {tries} time{'s' if tries > 1 else ''})"
            raise LLMError(failure.error.message + note, hint=failure.error.hint) from None
        finally:
            asking.where = None

    def _once(
        self,
        openai: Any,
        client: Any,
        messages: list[dict[str, Any]],
        stream: Stream | None,
        tools: list[dict[str, Any]] | None,
    ) -> Reply:
        params = self.params()
        temperature = params.pop("temperature", None)
        request: dict[str, Any] = {"model": self.settings.name, "messages": messages}
        if temperature is not None:
            request["temperature"] = temperature
        if tools:
            request["tools"] = tools
        if params:
            # Other generation parameters (top_p, max_tokens, seed...) go as they are.
            request["extra_body"] = params
        where = str(client.base_url).rstrip("/")
        deadline = time.monotonic() + self.timeout()
        broken_body: tuple[type[Exception], ...] = (ValueError, *_transport_errors())
        try:
            if stream is None:
                response = client.chat.completions.create(**request)
                return _reply_of(response, where)
            chunks = client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
            return _StreamedReply(where, deadline, self.timeout()).read(chunks, stream)
        except broken_body as exc:
            # An event that is not JSON, or the connection lost in the middle of the body.
            reason = "sent an event that is not JSON"
            if not isinstance(exc, ValueError):
                reason = (
                    f"lost the connection in the middle of the reply ({exc or type(exc).__name__})"
                )
            raise _Broken(where, reason) from None
        except openai.APITimeoutError:
            raise _Transient(
                LLMError(
                    f"the model server at {where} did not answer within {self.timeout():g} s",
                    hint="raise `model.timeout` in session-config, or try again later",
                )
            ) from None
        except openai.APIConnectionError as exc:
            raise _Transient(
                LLMError(
                    f"cannot reach the model server at {where}: {cause(exc)}",
                    hint="check `model.base_url` and your network",
                )
            ) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            verb = "refused the request" if status < 500 else "failed"
            message = f"the model server at {where} {verb} (HTTP {status}): {server_message(exc)}"
            if status == 429 or status >= 500:
                raise _Transient(LLMError(message, hint="try again later")) from None
            raise LLMError(message, hint=hint_for(status, self.settings.api_key_env)) from None
        except openai.APIError as exc:
            raise LLMError(f"the model server at {where} gave an unusable answer: {exc}") from None


def _usage(usage: Any) -> dict[str, int] | None:
    """``prompt_tokens`` and ``completion_tokens``, those the server sent."""
    if usage is None:
        return None
    found = {}
    for key in ("prompt_tokens", "completion_tokens"):
        value = getattr(usage, key, None)
        if isinstance(value, int):
            found[key] = value
    return found or None


def _reasoning(message: Any) -> str | None:
    """``reasoning_content`` (DeepSeek and others): an extra field of the message or delta."""
    value = getattr(message, "reasoning_content", None)
    if value is None:
        value = (getattr(message, "model_extra", None) or {}).get("reasoning_content")
    return value if isinstance(value, str) else None


class _Broken(Exception):
    """A reply that came with status 200 but is not a whole reply (retried, never kept)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = LLMError(
            f"the model server at {where} {reason}; the reply was not kept",
            hint="check that `model.base_url` is a chat-completions server "
            "(it should serve /chat/completions), or try again later",
        )


def _transport_errors() -> tuple[type[Exception], ...]:
    """httpx's errors (the openai client's transport, loaded with it): a body cut short."""
    httpx: Any = sys.modules.get("httpx")
    return (httpx.HTTPError,) if httpx is not None else ()


def _reply_of(response: Any, where: str) -> Reply:
    """A whole (non-streamed) completion as a ``Reply``; ``_Broken`` when it is not one."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        # The client hands back the body as text when it is not JSON (an HTML page).
        raise _Broken(where, "answered with something that is not a chat completion")
    if not choices:
        raise _Broken(where, "returned no choices")
    choice = choices[0]
    if choice.finish_reason is None or getattr(choice, "message", None) is None:
        raise _Broken(where, "returned a reply without a finish_reason (cut off)")
    message = choice.message
    calls = tuple(
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
        for c in (message.tool_calls or [])
        if getattr(c, "function", None) is not None
    )
    return Reply(
        text=message.content or "",
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        usage=_usage(response.usage),
        thought=_reasoning(message),
        model=response.model,
    )


class _StreamedReply:
    """Puts a reply together from stream chunks: text, reasoning, tool calls by index."""

    def __init__(self, where: str, deadline: float, timeout: float) -> None:
        self.where = where
        self.deadline = deadline
        self.timeout = timeout
        self.size = 0
        self.text: list[str] = []
        self.thought: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.model: str | None = None

    def _bounds(self, added: int) -> None:
        """A reply past ``model.timeout`` or ``MAX_REPLY_BYTES`` is an error."""
        self.size += added
        if self.size > MAX_REPLY_BYTES:
            raise LLMError(
                f"the model server at {self.where} sent a reply of more than "
                f"{MAX_REPLY_BYTES >> 20} MB; it was not kept",
                hint="ask for a shorter answer (max_tokens in `model`)",
            )
        if time.monotonic() > self.deadline:
            raise _Transient(
                LLMError(
                    f"the model server at {self.where} did not finish its reply within "
                    f"{self.timeout:g} s; it was not kept",
                    hint="raise `model.timeout` in session-config (it covers the whole reply)",
                )
            )

    def read(self, chunks: Any, stream: Stream) -> Reply:
        watching = events.get()
        for chunk in chunks:
            if not hasattr(chunk, "choices"):
                raise _Broken(self.where, "sent an event that is not a completion chunk")
            self._bounds(0)
            self.model = getattr(chunk, "model", None) or self.model
            if getattr(chunk, "usage", None) is not None:
                self.usage = _usage(chunk.usage)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            self.finish_reason = choice.finish_reason or self.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            thought = _reasoning(delta)
            if thought:
                self._bounds(len(thought))
                self.thought.append(thought)
                if watching is not None:
                    watching.thought(thought)
            if delta.content:
                self._bounds(len(delta.content))
                self.text.append(delta.content)
                stream(delta.content)
            for part in delta.tool_calls or []:
                # The first delta of a call carries its id and name; later ones add to
                # its arguments. They are told apart by ``index``.
                call = self.calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                if part.id:
                    call["id"] = part.id
                function = part.function
                if function is not None:
                    if function.name:
                        call["name"] += function.name
                    if function.arguments:
                        self._bounds(len(function.arguments))
                        call["arguments"] += function.arguments
        if self.finish_reason is None:
            reason = "ended the stream before the reply was finished (no finish_reason)"
            if not self.text and not self.calls and self.model is None:
                reason = "answered with something that is not a stream of completion events"
            raise _Broken(self.where, reason)
        return Reply(
            text="".join(self.text),
            tool_calls=tuple(
                ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
                for _, c in sorted(self.calls.items())
            ),
            finish_reason=self.finish_reason,
            usage=self.usage,
            thought="".join(self.thought) or None,
            model=self.model,
        )


# One client per process and server: a new ``openai.OpenAI`` re-reads the CA
# bundle (~23 ms of CPU), which a build asking 40 models at once would pay 40
# times over. The client is thread-safe and keeps its connections open.
_clients: dict[tuple[str, str | None, float, tuple[str, ...], int], Any] = {}
_clients_lock = threading.Lock()


def _client(
    openai: Any,
    api_key: str,
    base_url: str | None,
    timeout: float,
    withheld: dict[str, Any],
    max_retries: int,
) -> Any:
    """The client for this server, key, timeout and retries, left-out headers included."""
    key = (api_key, base_url, timeout, tuple(sorted(withheld)), max_retries)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=max_retries,
                timeout=timeout,
                default_headers=withheld or None,
            )
    return client
