"""What a doit selection reaches: the tasks, and for each session the stages.

A leaf module: the reporter counts the reached tasks for its progress line,
and the run tells the cold-build workers how far to take each session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domarkx.data.layout import STAGES

# The stages a worker may do for a session, as bits of one number per session.
PARSE, EXPAND, SNAPSHOT, RUN, EXPORT = 1, 2, 4, 8, 16
STAGE_BITS = dict(zip(STAGES, (PARSE, EXPAND, SNAPSHOT, RUN, EXPORT), strict=True))
EVERY_STAGE = sum(STAGE_BITS.values())


def reached_tasks(tasks: dict[str, Any], selected: Sequence[str]) -> set[str]:
    """The names of the tasks a doit selection reaches (through task_dep and setup)."""
    reached: set[str] = set()
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name in reached or name not in tasks:
            continue
        reached.add(name)
        stack.extend(tasks[name].task_dep)
        stack.extend(tasks[name].setup_tasks)
    return reached


def stages_wanted(
    tasks: dict[str, Any], selected: Sequence[str], names: Sequence[str]
) -> list[int]:
    """For each of ``names``, the stages (``STAGE_BITS``) the selection reaches.

    A session whose ``parse`` is not reached gets 0: a worker leaves it alone.
    """
    if set(STAGE_BITS) <= set(selected):  # a plain `doit`: every stage of every session
        return [EVERY_STAGE] * len(names)
    reached = reached_tasks(tasks, selected)
    return [
        sum(bit for stage, bit in STAGE_BITS.items() if f"{stage}:{name}" in reached)
        if f"parse:{name}" in reached
        else 0
        for name in names
    ]
