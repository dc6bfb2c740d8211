"""Import time against document size: ten times the text should take about ten times as long.

    python bench/import_scaling.py [--copies 20,200,2000]

Imports (parse, expand, build the snapshot; nothing stored) one document made
of N copies of a unit holding every common construct (a message heading, a
paragraph, nested lists, a quote, a fenced block, an HTML block, a macro and a
code span), best of three, and prints the time per copy at each size. A time
per copy that grows with N means something is quadratic in the document's
size. (This was a unit test's ratio assertion; a ratio of wall times is a
measurement, not a test.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domarkx.data.store import Store
from domarkx.session.snapshot import SnapshotManager

UNIT = "\n".join(
    [
        *["## user", "", "para text", "", "- item", "  - nested", "", "> quote", ""],
        *["```bash", "echo hi", "```", "", "<div>", "</div>", "", "[@p](domarkx://p) `c`", ""],
    ]
)
FRONT = '---\nparams:\n  p: "value"\n---\n\n'


def best_import(manager: SnapshotManager, text: str, tries: int = 3) -> float:
    """The shortest of ``tries`` imports of ``text``, in seconds."""
    path = manager.store.root / "sessions" / "big.md"
    path.write_text(text, encoding="utf-8")
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        expanded, _ = manager.expand(manager.parse(path))
        manager.build(expanded)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="20,200,2000", help="sizes, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "sessions").mkdir()
        manager = SnapshotManager(Store(root / ".domarkx", root))
        print(f"{'copies':>8} {'lines':>8} {'import (ms)':>12} {'per copy (us)':>14}")
        first = None
        for copies in [int(n) for n in args.copies.split(",")]:
            seconds = best_import(manager, FRONT + UNIT * copies)
            per_copy = seconds / copies
            first = first or per_copy
            lines = (FRONT + UNIT * copies).count("\n")
            print(
                f"{copies:>8} {lines:>8} {seconds * 1000:>12.1f} {per_copy * 1e6:>14.1f}"
                f"  ({per_copy / first:.2f}x the smallest)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
