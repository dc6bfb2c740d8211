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
no patching.
"""

from __future__ import annotations

from typing import Any, ClassVar

from domarkx.errors import LLMError
from domarkx.llm.messages import is_output_message
from domarkx.llm.provider import Provider, Stream

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

    def replies(self) -> list[str]:
        """The ``scripted_replies`` list of the front matter, checked."""
        replies = self.front_matter.get(FRONT_MATTER_KEY)
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise LLMError(
                f"the scripted provider reads its replies from the front matter key "
                f"`{FRONT_MATTER_KEY}`, a list of strings",
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

    def complete(self, messages: list[dict[str, Any]], stream: Stream | None = None) -> str:
        """The next scripted reply; an LLMError when the list has run out."""
        replies = self.replies()
        index = self.reply_index(messages)
        if index >= len(replies):
            raise LLMError(
                f"the scripted provider has {len(replies)} repl"
                f"{'y' if len(replies) == 1 else 'ies'} and was asked for reply {index + 1}",
                hint=f"add a reply to `{FRONT_MATTER_KEY}` or lower `model.max_turns`",
            )
        reply = replies[index]
        if stream is not None:
            stream(reply)
        return reply
