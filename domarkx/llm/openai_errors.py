"""What the openai provider tells the user about a request: its retries, the server's words.

``RetryNotes`` reads the ``openai`` client's log records in the thread that
makes a request and says each retry on stderr; ``asking`` holds, per thread,
the server being asked, why the last try failed and how many tries were made.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

# The request this thread is making: the server's URL, and why the last try failed.
asking = threading.local()


class RetryNotes(logging.Filter):
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
        where = getattr(asking, "where", None)
        if where is not None and isinstance(record.msg, str):
            args = record.args if isinstance(record.args, tuple) else ()
            if record.msg.startswith("Encountered an HTTP status error") and args:
                asking.cause = f"HTTP {args[0]}"
            elif record.msg.startswith("Encountered a timeout"):
                asking.cause = "no answer in time"
            elif record.msg.startswith("Encountered exception") and args:
                asking.cause = f"cannot connect ({args[0]})"
            elif record.msg.startswith("Retrying request"):
                asking.tries = getattr(asking, "tries", 1) + 1
                when = f" in {args[0]:.2g} s" if args and isinstance(args[0], float) else ""
                count = ""
                if len(args) == 3 and isinstance(args[1], int) and isinstance(args[2], int):
                    count = f" (try {args[1] + 1} of {args[2] + 1})"
                print(
                    f"domarkx: the model server at {where}: {asking.cause}; retrying{when}{count}",
                    file=sys.stderr,
                    flush=True,
                )
        return record.levelno >= self.shown_from


def cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)


def server_message(exc: Any) -> str:
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


def hint_for(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        where = f"in {api_key_env}" if api_key_env else "(set `model.api_key_env`)"
        return f"check the API key {where}"
    if status == 404:
        return "check `model.name` and `model.base_url` (the server should serve /chat/completions)"
    return "check `model` in session-config and the messages of the session"
