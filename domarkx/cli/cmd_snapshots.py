"""``domarkx snapshots``: list the stored snapshots (like ``docker images``)."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store, print_json, print_table


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "snapshots", run, help="list snapshots")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: Args) -> int:
    store = open_store()
    tags_by_id: dict[str, list[str]] = {}
    for name, snapshot_id in store.tags().items():
        tags_by_id.setdefault(snapshot_id, []).append(name)
    summaries = sorted(store.snapshot_summaries(), key=lambda s: s.created, reverse=True)
    if args.json:
        print_json(
            [
                {
                    "snapshot_id": s.snapshot_id,
                    "source_file": s.source_file,
                    "created": s.created,
                    "tags": sorted(tags_by_id.get(s.snapshot_id, [])),
                }
                for s in summaries
            ]
        )
        return 0
    print_table(
        ["SNAPSHOT ID", "SOURCE FILE", "CREATED", "TAGS"],
        [
            (
                s.snapshot_id[:12],
                s.source_file,
                s.created,
                ",".join(sorted(tags_by_id.get(s.snapshot_id, []))),
            )
            for s in summaries
        ],
    )
    return 0
