"""``domarkx schema``: the JSON Schema of snapshots (or instances)."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, print_json


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "schema", run, help="print the JSON Schema of a snapshot")
    parser.add_argument("--instance", action="store_true", help="the schema of an instance")


def run(args: Args) -> int:
    # The pydantic models (~150 ms): loaded when the command runs, not at every start.
    from domarkx.data.models import SessionInstance, SessionSnapshot

    model = SessionInstance if args.instance else SessionSnapshot
    print_json(model.model_json_schema())
    return 0
