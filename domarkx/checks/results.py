"""Check results in a conversation: written into, and read back from, ``msg-metadata``.

The results of a user message's checks go into the ``msg-metadata`` of the
last assistant message that answers it, as ``checks: [{kind, passed,
detail}]``, in the order of the checks (with samples, one more entry of kind
``samples`` last). A turn without an assistant message keeps them in the
user message's own ``msg-metadata``. An export shows them, so ``build
--check`` sees a result that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from domarkx.checks.evaluate import Result, last_assistant
from domarkx.checks.spec import Check, Expect
from domarkx.data.models import Message

KEY = "checks"


def record(conversation: list[Message], user_index: int, results: list[Result]) -> int:
    """Write ``results`` into the turn's last assistant message; return its index."""
    index = last_assistant(conversation, user_index)
    if index is None:
        index = user_index
    message = conversation[index]
    metadata = dict(message.message_metadata or {})
    metadata[KEY] = [r.record() for r in results]
    conversation[index] = message.model_copy(update={"message_metadata": metadata})
    return index


def recorded(conversation: list[Message], user_index: int) -> list[Result] | None:
    """The results recorded for the user message at ``user_index`` (None: not run)."""
    index = last_assistant(conversation, user_index)
    for at in (index, user_index):
        if at is None:
            continue
        items = (conversation[at].message_metadata or {}).get(KEY)
        if isinstance(items, list):
            found = [Result.from_record(item) for item in items]
            return [r for r in found if r is not None]
    return None


@dataclass(frozen=True)
class Outcome:
    """One check's result with where it is written: what reports and JUnit show."""

    session: str  # the document, as the user names it
    line: int | None  # the check's line in it
    label: str  # kind and argument, short
    result: Result

    @property
    def where(self) -> str:
        return f"{self.session}:{self.line}" if self.line else self.session


def outcomes(
    session: str, expects: dict[int, Expect], conversation: list[Message]
) -> list[Outcome]:
    """Every check of a run, paired with its result (a check that did not run fails)."""
    found: list[Outcome] = []
    for user_index, expect in sorted(expects.items()):
        results = recorded(conversation, user_index)
        checks: list[Check | None] = list(expect.checks)
        if expect.samples > 1:
            checks.append(None)
        for n, check in enumerate(checks):
            line = check.line if check is not None else expect.line
            label = check.label() if check is not None else f"samples: {expect.samples}"
            kind = check.kind if check is not None else "samples"
            if results is None or n >= len(results):
                result = Result(kind, False, "not run: the run ended before this turn")
            else:
                result = results[n]
            found.append(Outcome(session, line, label, result))
    return found


def failures(conversation: list[Message]) -> list[tuple[int, Result]]:
    """The failed checks recorded anywhere in a conversation: message index and result."""
    found = []
    for index, message in enumerate(conversation):
        items = (message.message_metadata or {}).get(KEY)
        if not isinstance(items, list):
            continue
        for item in items:
            result = Result.from_record(item)
            if result is not None and not result.passed:
                found.append((index, result))
    return found
