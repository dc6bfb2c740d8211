"""The ``judge`` check: a model grades a turn against a rubric.

The judge is a model behind an endpoint of the project's configuration
(``[endpoints.NAME]``; the check's ``endpoint``/``model``, else ``[checks]``
``judge_endpoint``/``judge_model``). It is sent two messages:

- system: the judge prompt (``JUDGE_PROMPT``, or ``[checks] judge_prompt``),
  which asks for a JSON object ``{"pass": true|false, "reason": "..."}``;
- user: the rubric, then the turn as a transcript (the user's message without
  its expect block, the assistant's messages with their tool calls, and the
  outputs and tool results).

The request goes through the replay folder like every model call (same key
rules, same ``DOMARKX_LLM`` modes), so a build grades offline and the same way
every time. The verdict is the first JSON object of the answer (a fenced one
too); an answer without one fails the check, saying what the judge said.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from domarkx.checks.evaluate import Turn
from domarkx.checks.spec import Check, is_expect
from domarkx.data.models import Message, ModelSettings
from domarkx.errors import LLMError
from domarkx.llm.endpoints import resolve
from domarkx.llm.messages import to_chat_messages
from domarkx.llm.provider import provider_for
from domarkx.llm.replay import ReplayCache

if TYPE_CHECKING:
    from domarkx.config import ProjectConfig

JUDGE_PROMPT = """\
You grade one turn of a conversation between a user and an AI assistant against a rubric.
Read the rubric, then the turn. Decide whether the assistant's reply satisfies the rubric.
Answer with one JSON object and nothing else:
{"pass": true or false, "reason": "one sentence that says why"}"""


class Judge:
    """Grades turns for one session; calls go through ``cache``."""

    def __init__(self, project: ProjectConfig, cache: ReplayCache, *, session: str) -> None:
        self.project = project
        self.cache = cache
        self.session = session
        self.keys: list[str] = []  # replay keys of the calls made, for the run's records

    def settings(self, check: Check) -> ModelSettings:
        """The model that grades ``check``: its endpoint and name, temperature 0."""
        configured = getattr(self.project, "checks", None)
        endpoint = check.options.get("endpoint") or getattr(configured, "judge_endpoint", None)
        model = check.options.get("model") or getattr(configured, "judge_model", None)
        if endpoint is None or model is None:
            raise LLMError(
                "judge: no endpoint or model to grade with",
                file=self.session,
                line=check.line,
                hint="give the check `endpoint` and `model`, or set judge_endpoint and "
                f"judge_model under [checks] in {self.project.describe()}",
            )
        return ModelSettings(provider="openai", name=model, endpoint=endpoint, temperature=0)

    def prompt(self) -> str:
        configured = getattr(self.project, "checks", None)
        return getattr(configured, "judge_prompt", None) or JUDGE_PROMPT

    def messages(self, check: Check, turn: Turn) -> list[dict[str, Any]]:
        """What the judge is sent."""
        return [
            {"role": "system", "content": self.prompt()},
            {
                "role": "user",
                "content": f"Rubric:\n{check.arg.strip()}\n\nThe turn:\n\n{transcript(turn)}",
            },
        ]

    def grade(self, check: Check, turn: Turn) -> tuple[bool, str]:
        access = resolve(
            self.settings(check),
            self.project,
            session=self.session,
            locate=lambda key: check.line,
        )
        provider = provider_for(access.settings)
        provider.refusal = access.refusal
        where = f"{self.session}:{check.line or '?'}: judge"
        reply, key = self.cache.complete(provider, self.messages(check, turn), context=where)
        if key is not None:
            self.keys.append(key)
        return verdict(reply.text)


def transcript(turn: Turn) -> str:
    """The turn as the judge reads it: one ``[role]`` section per chat message."""
    question = Message(
        role="user",
        message_metadata=turn.question.message_metadata,
        content=[b for b in turn.question.content if not is_expect(b)],
    )
    parts = []
    for message in to_chat_messages([question, *turn.replies]):
        text = str(message.get("content") or "").strip()
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            text += f"\n(calls tool `{function.get('name')}` with {function.get('arguments')})"
        parts.append(f"[{message['role']}]\n{text.strip()}")
    return "\n\n".join(parts)


def verdict(answer: str) -> tuple[bool, str]:
    """``(passed, reason)`` from the judge's answer; no usable JSON object fails."""
    found = _first_object(answer)
    if found is None or not isinstance(found.get("pass"), bool):
        said = " ".join(answer.split())[:200]
        return False, f"the judge did not answer with {{pass, reason}}: {said!r}"
    reason = found.get("reason")
    return found["pass"], str(reason) if reason is not None else ""


def _first_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
