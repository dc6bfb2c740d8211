"""Any server that speaks the OpenAI chat-completions protocol, through the ``openai`` package.

OpenAI itself, DeepSeek, OpenRouter, vLLM, llama.cpp's server, Ollama: set
``base_url`` and ``name`` in ``model``. The ``openai`` package is an optional
extra (``pip install 'domarkx[openai]'``) and is imported only when a model is
called, so the command starts fast without it.

Retries are the client's own (``max_retries``): 408, 409, 429, 5xx, timeouts
and connection failures are retried ``DOMARKX_LLM_RETRIES`` times (default 4)
with its exponential backoff (0.5 s doubled, at most 8 s, with jitter), or
after the delay the server asks for in ``retry-after-ms`` / ``retry-after``.
Each retry is told on stderr (``_RetryNotes``, a filter on the client's
logger), so a run waiting on a server that is down never looks hung.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from domarkx.errors import LLMError
from domarkx.llm.provider import Provider, Stream
from domarkx.llm.reply import Reply, ToolCall

DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 120.0
# Local servers (llama.cpp, Ollama, vLLM) want no key, but the client insists on one.
PLACEHOLDER_KEY = "no-key"


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
            raise LLMError(
                f"the API key variable {variable} is not set (model {self.settings.name!r})",
                hint=f"export {variable}=<your key>, or change `model.api_key_env` in session-config",
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
        return {name: openai.Omit() for name in names}

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
        client = _client(
            openai,
            self.api_key(),
            self.settings.base_url,
            self.timeout(),
            self.withheld_headers(openai),
            attempts - 1,
        )
        _RetryNotes.install()
        _asking.where = str(client.base_url).rstrip("/")
        _asking.cause = "no answer"
        try:
            return self._once(openai, client, messages, stream, tools)
        except _Transient as failure:
            tries = f" (tried {attempts} time{'s' if attempts > 1 else ''})"
            raise LLMError(failure.error.message + tries, hint=failure.error.hint) from None
        finally:
            _asking.where = None

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
        try:
            if stream is None:
                response = client.chat.completions.create(**request)
                if not response.choices:
                    raise LLMError(f"the model server at {where} returned no choices")
                return _reply_of(response)
            chunks = client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
            return _StreamedReply().read(chunks, stream)
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
                    f"cannot reach the model server at {where}: {_cause(exc)}",
                    hint="check `model.base_url` and your network",
                )
            ) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            verb = "refused the request" if status < 500 else "failed"
            message = f"the model server at {where} {verb} (HTTP {status}): {_server_message(exc)}"
            if status == 429 or status >= 500:
                raise _Transient(LLMError(message, hint="try again later")) from None
            raise LLMError(message, hint=_hint_for(status, self.settings.api_key_env)) from None
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


def _reply_of(response: Any) -> Reply:
    """A whole (non-streamed) completion as a ``Reply``."""
    choice = response.choices[0]
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

    def __init__(self) -> None:
        self.text: list[str] = []
        self.thought: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.model: str | None = None

    def read(self, chunks: Any, stream: Stream) -> Reply:
        for chunk in chunks:
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
            if delta.content:
                self.text.append(delta.content)
                stream(delta.content)
            thought = _reasoning(delta)
            if thought:
                self.thought.append(thought)
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
                        call["arguments"] += function.arguments
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


# The request this thread is making: the server's URL, and why the last try failed.
_asking = threading.local()


class _RetryNotes(logging.Filter):
    """Tells the user on stderr each time the client retries a request of domarkx's.

    The ``openai`` client logs why a try failed (DEBUG) and that it retries
    (INFO, "Retrying request in %f seconds (retry %i of %s)") on its logger
    ``openai._base_client``. This filter on that logger reads those records
    in the thread that makes the request, and passes on to the logging
    handlers only what the logger's level let through before (``OPENAI_LOG``
    still works as the client documents).
    """

    LOGGER = "openai._base_client"
    _installed = False
    _lock = threading.Lock()

    def __init__(self, shown_from: int) -> None:
        super().__init__()
        self.shown_from = shown_from

    @classmethod
    def install(cls) -> None:
        """Once per process: lower the logger's level to DEBUG and filter it."""
        with cls._lock:
            if cls._installed:
                return
            logger = logging.getLogger(cls.LOGGER)
            shown_from = logger.getEffectiveLevel()
            logger.setLevel(min(shown_from, logging.DEBUG))
            logger.addFilter(cls(shown_from))
            cls._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        where = getattr(_asking, "where", None)
        if where is not None and isinstance(record.msg, str):
            args = record.args if isinstance(record.args, tuple) else ()
            if record.msg.startswith("Encountered an HTTP status error") and args:
                _asking.cause = f"HTTP {args[0]}"
            elif record.msg.startswith("Encountered a timeout"):
                _asking.cause = "no answer in time"
            elif record.msg.startswith("Encountered exception") and args:
                _asking.cause = f"cannot connect ({args[0]})"
            elif record.msg.startswith("Retrying request"):
                when = f" in {args[0]:.2g} s" if args and isinstance(args[0], float) else ""
                count = ""
                if len(args) == 3 and isinstance(args[1], int) and isinstance(args[2], int):
                    count = f" (try {args[1] + 1} of {args[2] + 1})"
                print(
                    f"domarkx: the model server at {where}: {_asking.cause}; retrying{when}{count}",
                    file=sys.stderr,
                    flush=True,
                )
        return record.levelno >= self.shown_from


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)


def _server_message(exc: Any) -> str:
    """The server's own words: ``error.message`` of an OpenAI-style body, else the body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    if body:
        return str(body)
    response = getattr(exc, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    return text.strip()[:500] or str(exc)


def _hint_for(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        where = f"in {api_key_env}" if api_key_env else "(set `model.api_key_env`)"
        return f"check the API key {where}"
    if status == 404:
        return "check `model.name` and `model.base_url` (the server should serve /chat/completions)"
    return "check `model` in session-config and the messages of the session"
