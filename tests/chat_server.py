"""A real chat-completions server on 127.0.0.1 for the tests, scripted response by response.

It speaks ``POST /v1/chat/completions`` as the OpenAI client expects: a JSON
completion, or server-sent events when the request has ``"stream": true``
(text in small pieces, tool calls as deltas by index: id and name first, then
the arguments in pieces; usage in a last chunk when ``stream_options`` asks).
A response may carry tool calls, usage and ``reasoning_content``.
Every request body it receives is kept in ``requests``, its headers (lower-case
names) in ``headers``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Response:
    """What the server answers to one request."""

    text: str = ""
    status: int = 200
    error: str = "scripted failure"
    delay: float = 0.0
    chunk_size: int = 5
    # [{"id", "name", "arguments"}]: the calls the model makes (finish_reason "tool_calls").
    tool_calls: list[dict[str, str]] | None = None
    reasoning: str | None = None  # sent as reasoning_content
    usage: dict[str, int] | None = None  # default: prompt 1, completion 1
    model: str | None = None  # the model the server says answered (default: the request's)
    headers: dict[str, str] | None = None  # extra response headers (``retry-after-ms``...)
    # A broken answer with status 200 (see FAULTS): what a proxy, a captive portal or a
    # crashing server sends.
    fault: str | None = None

    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def usage_block(self) -> dict[str, int]:
        usage = dict(self.usage or {"prompt_tokens": 1, "completion_tokens": 1})
        usage.setdefault("total_tokens", sum(usage.values()))
        return usage


# "cut": the stream stops after some text, before finish_reason; "bad_event": an event
# that is not JSON; "not_sse": a JSON completion where events were asked for; "html": a
# web page; "no_finish": a JSON completion whose finish_reason is null.
FAULTS = ("cut", "bad_event", "not_sse", "html", "no_finish")


class ChatServer:
    """``with ChatServer() as server:`` serves on ``server.base_url`` until the block ends."""

    def __init__(self, port: int = 0) -> None:
        self.requested_port = port  # 0: any free port
        self.queue: deque[Response] = deque()
        self.default: Response | None = None
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.received_at: list[float] = []  # time.monotonic() of each request
        self._lock = threading.Lock()
        self._calls_made = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting -------------------------------------------------------------

    def reply(self, *texts: str) -> ChatServer:
        """Queue 200 answers with these texts, one per request."""
        self.queue.extend(Response(text=t) for t in texts)
        return self

    def call(
        self, *calls: tuple[str, dict[str, Any] | str], text: str = "", **extra: Any
    ) -> ChatServer:
        """Queue one answer that calls tools: ``call(("add", {"a": 1}), ...)``; ids call_1...."""
        start = self._calls_made
        tool_calls = [
            {
                "id": f"call_{start + n + 1}",
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            }
            for n, (name, args) in enumerate(calls)
        ]
        self._calls_made += len(tool_calls)
        self.queue.append(Response(text=text, tool_calls=tool_calls, **extra))
        return self

    def fail(
        self, status: int, error: str = "scripted failure", headers: dict[str, str] | None = None
    ) -> ChatServer:
        """Queue one error answer (``headers``: such as ``{"retry-after-ms": "10"}``)."""
        self.queue.append(Response(status=status, error=error, headers=headers))
        return self

    def next_response(self) -> Response:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.default is not None:
            return self.default
        return Response(status=500, error="the test server has no response queued")

    # --- life cycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        server: ChatServer = self

        class Handler(_Handler):
            chat = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.requested_port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    chat: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        # The client may give up first (a timeout test); then there is no one to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.chat._lock:
            self.chat.requests.append(body)
            self.chat.received_at.append(time.monotonic())
            self.chat.headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        response = self.chat.next_response()
        if response.delay:
            time.sleep(response.delay)
        if response.fault is not None:
            self._fault(body, response)
        elif response.status != 200:
            error = {"message": response.error, "type": "test_error", "code": response.status}
            self._json(response.status, {"error": error}, response.headers)
        elif body.get("stream"):
            self._stream(body, response)
        else:
            self._json(200, _completion(body, response))

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: dict[str, Any], response: Response) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        size = response.chunk_size

        def pieces(text: str) -> list[str]:
            return [text[i : i + size] for i in range(0, len(text), size)]

        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"reasoning_content": p} for p in pieces(response.reasoning or "")]
        deltas += [{"content": p} for p in pieces(response.text)]
        for index, call in enumerate(response.tool_calls or []):
            head = {"index": index, "id": call["id"], "type": "function"}
            deltas.append(
                {"tool_calls": [{**head, "function": {"name": call["name"], "arguments": ""}}]}
            )
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": p}}]}
                for p in pieces(call["arguments"])
            ]
        for n, delta in enumerate(deltas):
            self._event(_chunk(body, response, delta, None))
            if n == 0:
                self.wfile.flush()
        self._event(_chunk(body, response, {}, response.finish_reason()))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = _chunk(body, response, {}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = response.usage_block()
            self._event(usage_chunk)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _fault(self, body: dict[str, Any], response: Response) -> None:
        fault = response.fault
        if fault == "html":
            page = b"<!doctype html><html><body><h1>Sign in to the network</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        elif fault in ("not_sse", "no_finish"):
            completion = _completion(body, response)
            if fault == "no_finish":
                completion["choices"][0]["finish_reason"] = None
            self._json(200, completion)
        elif fault in ("cut", "bad_event"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self._event(_chunk(body, response, {"role": "assistant", "content": ""}, None))
            self._event(_chunk(body, response, {"content": response.text[:5]}, None))
            if fault == "bad_event":
                self.wfile.write(b"data: {this is not json\n\n")
                self._event(_chunk(body, response, {"content": response.text[5:]}, None))
                self._event(_chunk(body, response, {}, response.finish_reason()))
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()  # "cut": the connection closes here (HTTP/1.0)
        else:
            raise ValueError(f"unknown fault {fault!r}: one of {FAULTS}")

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")


def _completion(body: dict[str, Any], response: Response) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    if response.reasoning is not None:
        message["reasoning_content"] = response.reasoning
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in response.tool_calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": response.model or body.get("model", "test-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": response.finish_reason()}],
        "usage": response.usage_block(),
    }


def _chunk(
    body: dict[str, Any], response: Response, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": response.model or body.get("model", "test-model"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
