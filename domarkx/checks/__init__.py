"""Checks: what the reply to a user message must satisfy (``expect`` blocks).

A user message may carry a fenced ```` ```yaml expect ```` block. Its checks
are read and validated at import (``spec``: unknown kinds, bad regexes, bad
schemas and unknown judge endpoints are one error naming the line), and run
after the turn that answers the message (``evaluate``): text checks on the
assistant's words, tool calls, token counts, code run in the session's
sandbox, and an LLM judge (``judge``) whose calls are recorded and replayed
like every model call. Results go into the ``msg-metadata`` of the turn's
last assistant message (``checks: [{kind, passed, detail}]``); ``junit``
writes them as JUnit XML for CI.

Layer: between ``session`` and ``llm`` (``session > checks > llm``). This
package imports ``llm``, ``parsing``, ``execution``, ``data`` and the root
modules; ``session`` runs the checks after a turn, and ``cli`` reports them.
"""
