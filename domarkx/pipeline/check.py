"""``domarkx build --check``: do the committed exports match what the build makes?

Like ``cog --check``: CI builds the sessions up to their runs, renders each
export in memory and compares it with ``.domarkx/exports/<session>.md`` as
committed. Nothing is written to ``exports/``. An export that differs, one
that is missing, and one left over from a session that no longer exists
all fail the check.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from domarkx.data.layout import Layout
from domarkx.pipeline.stages import export_text


@dataclass
class Mismatch:
    """One export that is not what the build produces."""

    name: str
    path: str
    problem: str  # "differs", "missing", "stale"
    diff: list[str]

    def describe(self) -> str:
        if self.problem == "missing":
            return f"{self.path}: missing (the build makes it)"
        if self.problem == "stale":
            return f"{self.path}: no session makes it any more (sessions/{self.name}.md is gone)"
        return f"{self.path}: differs from what the build makes"


def check_exports(layout: Layout, names: list[str] | None = None) -> list[Mismatch]:
    """Compare every session's export with the file in ``exports/``."""
    names = layout.session_names() if names is None else names
    mismatches = []
    for name in names:
        path = layout.export_out(name)
        expected = export_text(layout, name)
        try:
            with open(layout.abs(path), encoding="utf-8", newline="") as handle:
                actual = handle.read()
        except FileNotFoundError:
            mismatches.append(Mismatch(name, path, "missing", []))
            continue
        if actual != expected:
            diff = list(
                difflib.unified_diff(
                    actual.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    f"{path} (committed)",
                    f"{path} (built)",
                )
            )
            mismatches.append(Mismatch(name, path, "differs", diff))
    for name in sorted(set(layout.export_names()) - set(names)):
        if not os.path.exists(layout.abs(layout.source(name))):
            mismatches.append(Mismatch(name, layout.export_out(name), "stale", []))
    return mismatches
