"""``domarkx stop ID...``: stop instances and destroy their sandboxes."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "stop", run, help="stop instances, destroy their sandboxes")
    parser.add_argument("refs", nargs="+", metavar="ID", help="instance id or unique prefix")


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.session.instance import InstanceManager

    manager = InstanceManager(open_store())
    for ref in args.refs:
        print(manager.stop(ref).instance_id)
    return 0
