"""Record and replay model calls, so that builds give the same answers offline.

Every request is reduced to its canonical form (provider, model name, messages,
the tools on offer when there are any, generation parameters; not the
``base_url``, so that the same model behind another mirror replays) and keyed
by the SHA-256 of that form's canonical JSON. The reply (text, tool calls,
finish reason, usage, reasoning, model: ``Reply.to_record``) is stored beside
the request in ``<folder>/<key[:2]>/<key>.json``: a small, human-readable file
meant to be committed (``.domarkx/replay/``). Records of format 1 (the reply's
text alone) are still read.

``DOMARKX_LLM`` chooses the mode:

- ``auto`` (default): replay a recorded reply; call the model and record on a miss.
- ``replay``: never call; a miss is an error naming the session and message (CI).
- ``record``: always call, and overwrite the record.
- ``live``: always call, and keep no record (``domarkx test --live``).

Offline providers (``Provider.offline``, such as ``scripted``) bypass the cache:
they are deterministic already.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domarkx.data import remote
from domarkx.data.atomic import write_atomic
from domarkx.data.digest import digest
from domarkx.errors import LLMError
from domarkx.llm.provider import Provider, Stream, events
from domarkx.llm.reply import Reply, as_reply

ENV = "DOMARKX_LLM"
MODES = ("auto", "replay", "record", "live")
RECORD_FORMAT = 2


def mode_from_env() -> str:
    """The mode ``DOMARKX_LLM`` asks for (``auto`` when unset); an LLMError when invalid."""
    mode = os.environ.get(ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise LLMError(
            f"{ENV}={os.environ[ENV]!r} is not a replay mode",
            hint=f"set {ENV} to one of: {', '.join(MODES)}",
        )
    return mode


def canonical_request(
    provider: Provider,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What identifies a model call: the same dict gives the same reply from a replay.

    ``tools`` is left out when empty, so requests without tools keep their keys.
    """
    request: dict[str, Any] = {
        "provider": provider.provider_name,
        "model": provider.model_name,
        "messages": messages,
        "params": provider.params(),
    }
    if tools:
        request["tools"] = tools
    return request


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of the request's canonical JSON (sorted keys, no spaces, UTF-8)."""
    return digest(request)


def _names(key: str) -> Callable[[bytes], bool]:
    """Whether a record's bytes say they are the record of ``key`` (a shared one is checked)."""

    def check(data: bytes) -> bool:
        try:
            record = json.loads(data)
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("key") == key

    return check


class ReplayCache:
    """A folder of recorded model calls, one JSON file per request key."""

    def __init__(self, folder: Path, mode: str | None = None, sample: int = 0) -> None:
        self.folder = Path(folder)
        # The same question asked again (a check's ``samples``): sample N > 0 is part of
        # the key, so each sample has its own record; sample 0 keeps the plain key.
        self.sample = sample
        if mode is not None and mode not in MODES:
            raise LLMError(f"{mode!r} is not a replay mode", hint=f"use one of: {', '.join(MODES)}")
        self.mode = mode if mode is not None else mode_from_env()

    def path_for(self, key: str) -> Path:
        """Where the record of ``key`` lives."""
        return self.folder / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> Reply | None:
        """The recorded reply for ``key`` (here, else in the shared cache), or None."""
        path = self.path_for(key)
        if not path.exists():
            remote.fetch(remote.current(), "replay", key, path, valid=_names(key))
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LLMError(
                f"the replay record cannot be read: {exc}",
                file=path,
                hint=f"delete it, or record it again with {ENV}=record",
            ) from None
        try:
            if not isinstance(record, dict) or "reply" not in record:
                raise ValueError("it has no `reply`")
            return Reply.from_record(record["reply"])
        except (ValueError, TypeError) as exc:
            raise LLMError(
                f"the replay record has no usable `reply`: {exc}",
                file=path,
                hint=f"delete it, or record it again with {ENV}=record",
            ) from None

    def store(self, key: str, request: dict[str, Any], reply: Reply) -> Path:
        """Write the record of ``key`` atomically (temporary file, then rename)."""
        path = self.path_for(key)
        record = {
            "format": RECORD_FORMAT,
            "key": key,
            "request": request,
            "reply": reply.to_record(),
        }
        text = json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        # Durable: a recording is meant to be committed, and costs a model call to redo.
        write_atomic(path, text, durable=True)
        remote.share(remote.current(), "replay", key, text.encode("utf-8"))
        return path

    def complete(
        self,
        provider: Provider,
        messages: list[dict[str, Any]],
        *,
        context: str,
        stream: Stream | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[Reply, str | None]:
        """The reply to ``messages`` and its record key (None for offline providers).

        ``context`` says which session and message asked, for the replay-miss error.
        A replayed reply's text is passed to ``stream`` in one piece, after
        ``ReplyEvents.replayed`` (``provider.events``) is told.
        """
        if provider.offline:
            return as_reply(provider.complete(messages, stream, tools)), None
        request = canonical_request(provider, messages, tools)
        if self.sample:
            request["sample"] = self.sample
        key = request_key(request)
        if self.mode not in ("record", "live"):
            reply = self.lookup(key)
            if reply is not None:
                watching = events.get()
                if watching is not None:
                    watching.replayed()  # the terminal says so: no model answered just now
                if stream is not None and reply.text:
                    stream(reply.text)
                return reply, key
            if self.mode == "replay":
                raise LLMError(
                    f"{context}: no recorded reply for this model call "
                    f"(key {key[:12]}, {ENV}=replay)",
                    hint=f"record it once with {ENV}=auto or {ENV}=record and commit "
                    f"{self.path_for(key)}",
                )
        if provider.refusal is not None:
            raise provider.refusal  # nothing is sent that the user did not grant
        watching = events.get()
        if watching is not None:
            watching.asking(provider.model_name)
        # A provider raises on a broken reply (cut off, not JSON): nothing is recorded.
        fresh = as_reply(provider.complete(messages, stream, tools))
        if self.mode == "live":
            return fresh, None  # asked again, nothing kept
        self.store(key, request, fresh)
        return fresh, key
