"""``domarkx import FILE``: parse, expand macros, store a snapshot; print its id."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store, parse_params


def register(subparsers: Subparsers) -> None:
    parser = add_command(subparsers, "import", run, help="import a session document as a snapshot")
    parser.add_argument("file", help="the session document (Markdown)")
    parser.add_argument(
        "--param", action="append", metavar="K=V", help="value of a parameter macro (repeatable)"
    )
    parser.add_argument(
        "--tag", action="append", metavar="NAME", help="tag the snapshot (default: session name)"
    )


def run(args: Args) -> int:
    # The command's own modules (pathlib, the parser, the pydantic models): loaded when
    # it runs, not by every `domarkx` start (`--help`, other commands).
    from pathlib import Path

    from domarkx.session.snapshot import SnapshotManager  # (the same)

    result = SnapshotManager(open_store(args.file)).import_file(
        Path(args.file), parse_params(args.param), args.tag
    )
    print(result.snapshot.snapshot_id)
    return 0
