"""The offline provider: replies written in the session's front matter.

```markdown
---
scripted_replies:
  - "Let me look:\\n```bash\\nls\\n```"
  - "There are two files."
---
```

with ``model: {provider: scripted}`` in ``session-config``. It reaches no
network and needs no key, so example sessions build anywhere and tests need
no patching. A reply may also be a mapping that asks for tool calls:
``{text: "Let me add.", tool_calls: [{name: add, arguments: {a: 2, b: 3}}]}``
(``arguments`` as an object or as JSON text; ``id`` defaults to
``call_<reply>_<n>``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from domarkx.errors import LLMError
from domarkx.llm.messages import is_output_message
from domarkx.llm.provider import Provider, Stream
from domarkx.llm.reply import Reply, ToolCall

FRONT_MATTER_KEY = "scripted_replies"


class ScriptedProvider(Provider):
    """Answers with ``scripted_replies[i]``, where ``i`` counts the replies already given.

    ``i`` is the number of ``assistant`` messages in the request after the last
    ``user`` message that is a question (not code output fed back): the list
    holds the answers to the session's last question, one per model call of the
    code loop. The rule depends only on the request, so it gives the same reply
    for the same conversation in every run.
    """

    offline: ClassVar[bool] = True

    def replies(self) -> list[str | dict[str, Any]]:
        """The ``scripted_replies`` list of the front matter, checked."""
        replies = self.front_matter.get(FRONT_MATTER_KEY)
        if not isinstance(replies, list) or not all(isinstance(r, str | dict) for r in replies):
            raise LLMError(
                f"the scripted provider reads its replies from the front matter key "
                f"`{FRONT_MATTER_KEY}`, a list of strings (or of {{text, tool_calls}} mappings)",
                hint=f'add `{FRONT_MATTER_KEY}: ["first reply", "second reply"]` to the front matter',
            )
        return replies

    @staticmethod
    def reply_index(messages: list[dict[str, Any]]) -> int:
        """How many replies to the last question the request already holds."""
        count = 0
        for message in reversed(messages):
            if message.get("role") == "assistant":
                count += 1
            elif message.get("role") == "user" and not is_output_message(message):
                break
        return count

    def complete(
        self,
        messages: list[dict[str, Any]],
        stream: Stream | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """The next scripted reply; an LLMError when the list has run out."""
        replies = self.replies()
        index = self.reply_index(messages)
        if index >= len(replies):
            raise LLMError(
                f"the scripted provider has {len(replies)} repl"
                f"{'y' if len(replies) == 1 else 'ies'} and was asked for reply {index + 1}",
                hint=f"add a reply to `{FRONT_MATTER_KEY}` or lower `model.max_turns`",
            )
        reply = _reply(replies[index], index)
        if stream is not None and reply.text:
            stream(reply.text)
        return reply


def _reply(item: str | dict[str, Any], index: int) -> Reply:
    if isinstance(item, str):
        return Reply(text=item, finish_reason="stop")
    text = item.get("text", "")
    calls = []
    for n, call in enumerate(item.get("tool_calls") or []):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise LLMError(
                f"scripted reply {index + 1}: a tool call needs a `name`",
                hint="write tool calls as {name: add, arguments: {a: 1}}",
            )
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            ToolCall(
                id=str(call.get("id", f"call_{index}_{n}")), name=call["name"], arguments=arguments
            )
        )
    return Reply(
        text=text if isinstance(text, str) else str(text),
        tool_calls=tuple(calls),
        finish_reason="tool_calls" if calls else "stop",
    )
