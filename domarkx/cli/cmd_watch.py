"""``domarkx watch``: rebuild sessions on every save, one line per rebuild, until Ctrl-C."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, parse_params


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "watch",
        run,
        help="rebuild sessions on every save until Ctrl-C",
        description="Watch sessions/ and every included file; on each save rebuild the "
        "sessions it touches (up to snapshots by default) and print one line.",
    )
    parser.add_argument(
        "--until",
        choices=("snapshot", "export"),
        default="snapshot",
        help="how far to rebuild: snapshots (default) or everything up to exports",
    )
    parser.add_argument(
        "--param", action="append", metavar="K=V", help="value of a parameter macro (repeatable)"
    )


def run(args: Args) -> int:
    # doit and the build (~90 ms): loaded when the command runs, not at every start.
    from domarkx.data.layout import Layout, find_root
    from domarkx.pipeline.watch import Watcher  # (the same)

    watcher = Watcher(Layout.at(find_root()), args.until, params=parse_params(args.param))
    try:
        return watcher.loop()
    except KeyboardInterrupt:
        return 0
