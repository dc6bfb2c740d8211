"""``domarkx rm ID...``: remove instances (their sandboxes are destroyed first)."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "rm", run, help="remove instances")
    parser.add_argument("refs", nargs="+", metavar="ID", help="instance id or unique prefix")


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.session.instance import InstanceManager

    manager = InstanceManager(open_store())
    for ref in args.refs:
        print(manager.remove(ref))
    return 0
