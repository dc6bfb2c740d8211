"""``domarkx prune``: remove finished instances, unused snapshots and stray sandboxes."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    add_command(
        subparsers,
        "prune",
        run,
        help="remove what nothing refers to",
        description="Remove finished instances, snapshots that no tag or running instance "
        "refers to, and sandboxes (Docker containers) that no running instance owns.",
    )


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.session.instance import InstanceManager

    for removed in InstanceManager(open_store()).prune():
        print(removed)
    return 0
