"""``domarkx instances``: list instances (like ``docker ps``; ``--all`` for every one)."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store, print_json, print_table
from domarkx.errors import DomarkxError


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "instances", run, help="list instances")
    parser.add_argument("-a", "--all", action="store_true", help="finished ones too")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: Args) -> int:
    store = open_store()
    instances = []
    for instance_id in store.instance_ids():
        try:
            instance = store.get_instance(instance_id)
        except DomarkxError:
            continue
        if args.all or instance.status in ("created", "running"):
            instances.append(instance)
    instances.sort(key=lambda i: i.created_at, reverse=True)
    if args.json:
        print_json(
            [
                {
                    "instance_id": i.instance_id,
                    "snapshot_id": i.snapshot_id,
                    "status": i.status,
                    "engine": i.engine,
                    "created": i.created_at,
                }
                for i in instances
            ]
        )
        return 0
    print_table(
        ["INSTANCE ID", "SNAPSHOT ID", "STATUS", "ENGINE", "CREATED"],
        [
            (i.instance_id[:12], i.snapshot_id[:12], i.status, i.engine, i.created_at)
            for i in instances
        ],
    )
    return 0
