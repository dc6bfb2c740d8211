"""``domarkx layers SESSION``: the turn layers of a session, one line per message that ran code."""

from __future__ import annotations

import time
from pathlib import Path

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "layers",
        run,
        help="list a session's turn layers",
        description="For each message of SESSION that runs code (and the setup script): "
        "its layer's key prefix, size, whether a run can start from it (or why not), and "
        "when a run last did. SESSION is a document (sessions/x.md) or a snapshot "
        "(tag, id or unique prefix).",
    )
    parser.add_argument("session", metavar="SESSION", help="a document, or a snapshot ref")


def run(args: Args) -> int:
    # reason: every command loads each command module; the session stack only for `layers`
    from domarkx.session.layer_admin import listing
    from domarkx.session.snapshot import SnapshotManager  # reason: as above

    path = Path(args.session)
    store = open_store(path if path.is_file() else None)
    if path.is_file():
        snapshots = SnapshotManager(store)
        expanded, _ = snapshots.expand(snapshots.parse(path))
        snapshot = snapshots.build(expanded)
    else:
        snapshot = store.get_snapshot(store.resolve_snapshot(args.session))
    print(f"{'MESSAGE':<18} {'KEY':<14} {'SIZE':>9}  {'LAST USED':<17} RESTORABLE")
    for row in listing(store, snapshot):
        if not row["present"]:
            state, size, used = "no layer yet", "-", "-"
        else:
            state = "yes" if row["restorable"] else "no: " + "; ".join(row["reasons"])
            size = _size(row["size"])
            used = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(row["last_used"]))
                if row["last_used"]
                else "-"
            )
        print(f"{row['message']:<18} {row['key'][:12]:<14} {size:>9}  {used:<17} {state}")
    return 0


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
