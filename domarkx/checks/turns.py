"""What a run does with checks: find them in a snapshot, run them after a turn, record them.

``TurnChecks.for_snapshot`` reads a session's expect blocks (their lines
from the source document, when it is there) and its judge; ``after`` runs
the checks of one user message on the turn that answered it, in the same
sandbox, and writes the results into the conversation (``results.record``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx.checks.evaluate import Grader, Result, RunCode, run_checks, turn_at
from domarkx.checks.judge import Judge
from domarkx.checks.results import record
from domarkx.checks.spec import (
    Expect,
    expect_blocks,
    is_expect,
    validate_messages,
    written_config,
)
from domarkx.data.models import Message, SessionSnapshot
from domarkx.errors import DomarkxError
from domarkx.parsing.blocks import FencedCode, blocks
from domarkx.parsing.fences import parse_info
from domarkx.parsing.source import split_front_matter

if TYPE_CHECKING:
    from domarkx.config import ProjectConfig
    from domarkx.llm.replay import ReplayCache


def has_checks(conversation: list[Message]) -> bool:
    """Whether any user message carries an expect block."""
    return any(
        message.role == "user" and any(is_expect(b) for b in message.content)
        for message in conversation
    )


def expect_lines(source: Path, conversation: list[Message]) -> list[list[int]] | None:
    """Each content block's line, as far as the expect blocks need: found in the source.

    Only the expect blocks' entries matter (others are 0). None when the source
    cannot be read; a block not found there (from an include) has no line.
    """
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
        _, lines, _ = split_front_matter(text, str(source))
    except (OSError, DomarkxError):
        return None
    fences = [
        b
        for b in blocks(lines)
        if isinstance(b, FencedCode) and "expect" in parse_info(b.info).flags
    ]
    table = [[0] * len(m.content) for m in conversation]
    used: set[int] = set()
    for m, i, block in expect_blocks(conversation):
        for n, fence in enumerate(fences):
            if n not in used and fence.code == block.code:
                used.add(n)
                table[m][i] = fence.start + 1
                break
    return table


@dataclass
class TurnChecks:
    """A session's checks, by the index of the user message that carries them."""

    expects: dict[int, Expect]
    source: str
    grader: Grader | None = None

    @classmethod
    def for_snapshot(
        cls,
        snapshot: SessionSnapshot,
        *,
        root: Path,
        project: ProjectConfig,
        cache: ReplayCache,
    ) -> TurnChecks:
        source = snapshot.metadata.source_file
        lines = expect_lines(Path(root) / source, snapshot.conversation)
        expects = validate_messages(
            snapshot.conversation, lines, file=source, project=written_config(root)
        )
        return cls(expects, source, Judge(project, cache, session=source))

    def __bool__(self) -> bool:
        return bool(self.expects)

    def samples(self) -> int:
        """How many times the model is asked for the last message (1 without samples)."""
        return max((e.samples for e in self.expects.values()), default=1)

    def after(
        self, conversation: list[Message], user_index: int, run_code: RunCode | None
    ) -> list[Result] | None:
        """Run and record the checks of the user message at ``user_index`` (None: it has none)."""
        expect = self.expects.get(user_index)
        if expect is None:
            return None
        results = run_checks(
            expect, turn_at(conversation, user_index), run_code=run_code, grader=self.grader
        )
        record(conversation, user_index, results)
        return results

    def last_user_ends_turn(self, conversation: list[Message], index: int) -> int | None:
        """The user message whose turn ends before message ``index`` (a user message or
        the end), when it has checks; else None."""
        for at in range(index - 1, -1, -1):
            if conversation[at].role == "user":
                return at if at in self.expects else None
        return None
