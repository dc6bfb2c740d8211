"""``domarkx test [PATH]...``: run the sessions that have checks and report each check.

Each session document with an ``expect`` block is built as ``domarkx build``
builds it, with the build's caches (the model's replies replayed from
``.domarkx/replay/``, unless ``--live``); one line per check says the session, the ``file:line`` of the
check, its kind and whether it passed or why not; then a summary. Exit
status 1 when a check failed or a session could not run. ``--junit FILE``
writes JUnit XML for CI.
"""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command, add_yes


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "test",
        run,
        help="run the sessions that have checks (expect blocks) and report each check",
        description="Build every session under PATH (default: sessions/) that has an expect "
        "block, up to its run, with the build's caches (an unchanged session does not run "
        "again); print one line per check and a summary; exit 1 when any failed. Model "
        "replies are replayed from .domarkx/replay/ (DOMARKX_LLM applies) unless --live.",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="session documents or folders (default: sessions/)"
    )
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    parser.add_argument(
        "--live",
        action="store_true",
        help="ask the model again instead of replaying; keeps no record unless --record",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="ask the model again and keep its replies as the new replay records",
    )
    add_yes(parser)


def run(args: Args) -> int:
    # reason: every command loads each command module; the session stack only for `test`
    from domarkx.cli import testing

    return testing.run(args)
