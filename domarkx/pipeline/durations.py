"""How long each session's run takes: noted by every build, stored on request for shards.

Each run the build makes or takes from the execution cache notes the seconds
the run took where it ran (``cache/seconds/<name>.txt``): a record fetched
from the shared cache or the local one brings the seconds of the machine that
made it, so a build that runs nothing still knows what a cold build costs.

``domarkx build --store-durations`` gathers the notes of the build's
sessions into ``.domarkx/durations.json`` (``Layout.durations_file``), a
small JSON object of session names to seconds that the team commits.
``--shard`` reads it (``shard.read_durations``) to balance the shards; every
shard of a pipeline sees the same file because it is part of the checkout.
Storing merges: sessions this build knows nothing of keep their old entry,
sessions that are gone from the project are dropped.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable

from domarkx.data.atomic import write_if_changed
from domarkx.data.layout import Layout
from domarkx.pipeline import shard


def note(layout: Layout, name: str | None, seconds: float | None) -> None:
    """Remember that the run of session ``name`` took ``seconds`` where it ran."""
    if name is None or seconds is None:
        return
    with contextlib.suppress(OSError):  # a note is a hint for shards, never a failure
        write_if_changed(layout.abs(layout.seconds_file(name)), f"{max(seconds, 0.0):.3f}\n")


def noted(layout: Layout, name: str) -> float | None:
    """The seconds last noted for session ``name`` (None: none, or unreadable)."""
    try:
        with open(layout.abs(layout.seconds_file(name)), encoding="utf-8") as handle:
            value = float(handle.read().strip())
    except (OSError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def store(layout: Layout, names: Iterable[str]) -> tuple[int, int]:
    """Write the noted seconds of ``names`` into the durations file, merged with what it had.

    Returns how many sessions this build gave a duration, and how many the file holds.
    """
    try:
        before = shard.read_durations(layout) or {}
    except shard.ShardError:
        before = {}  # a broken file is replaced by a whole one
    present = set(layout.session_names())
    table = {name: ms / 1000 for name, ms in before.items() if name in present}
    recorded = 0
    for name in names:
        seconds = noted(layout, name)
        if seconds is not None and name in present:
            table[name] = round(seconds, 3)
            recorded += 1
    text = json.dumps(dict(sorted(table.items())), indent=1, ensure_ascii=False) + "\n"
    write_if_changed(layout.abs(layout.durations_file), text)
    return recorded, len(table)
