"""``domarkx fork FILE --messages N -o NEW``: a new session from the first N messages of FILE."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "fork",
        run,
        help="start a new session from the first N messages of another",
        description="Write NEW: FILE's front matter, the blocks before its first message and its "
        "first N messages, byte for byte (macros and includes as written).",
    )
    parser.add_argument("file", metavar="FILE", help="the session document to fork")
    parser.add_argument(
        "--messages", "-n", type=int, required=True, metavar="N", help="how many messages to keep"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="NEW", help="the new session document"
    )


def run(args: Args) -> int:
    # The command's own modules (pathlib, the pydantic models): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from pathlib import Path

    from domarkx.session.fork import fork  # (the same)

    fork(Path(args.file), args.messages, Path(args.output), open_store(args.file).root)
    print(args.output)
    return 0
