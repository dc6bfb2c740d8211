"""``domarkx run REF``: create an instance of a snapshot and run it; print its id."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx.cli.options import Args, Subparsers, add_command, add_yes, open_store

if TYPE_CHECKING:
    from domarkx.data.store import Store


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "run",
        run,
        help="run a snapshot in a sandbox (an instance)",
        description="Create an instance of REF, run its setup script and code blocks, ask the "
        "model for a turn when the session ends with a user message, then destroy the sandbox.",
    )
    parser.add_argument(
        "ref",
        metavar="REF",
        help="snapshot: tag, id, or unique id prefix; or a session document (imported first)",
    )
    parser.add_argument("-i", "--interactive", action="store_true", help="step through blocks")
    parser.add_argument("--engine", metavar="E", help="override session-config's engine")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a code block fails or times out"
    )
    add_yes(parser)


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.session.agents import Agents  # (the same)
    from domarkx.session.approval import for_project
    from domarkx.session.instance import InstanceManager  # (the same)

    store, ref = _store_and_snapshot(args.ref)
    approval = for_project(store.root, yes=args.yes)
    if args.interactive:
        from domarkx.cli.interactive import InteractiveRun  # prompt_toolkit: asked for only

        instance = InteractiveRun(
            store, ref, engine=args.engine, keep=args.keep, approval=approval
        ).loop()
    else:
        manager = InstanceManager(store, approval=approval)
        manager.host_tools = Agents(store, approval).tools()  # send_message and the rest
        stream = _terminal_stream()
        try:
            instance = manager.run(
                ref, engine=args.engine, keep=args.keep, strict=False, stream=stream
            )
        finally:
            if stream is not None:
                stream.end()
        if args.strict:
            print(instance.instance_id)
            manager.raise_for_failures(instance)
            return 0
    print(instance.instance_id)
    if instance.status == "failed" and instance.error:
        print(f"domarkx: warning: {instance.error}", file=sys.stderr)
    return 0


def _store_and_snapshot(ref: str) -> tuple[Store, str]:
    """The store and the snapshot ``ref`` names: a document (a file that exists) is
    imported into its own project first, as ``domarkx import`` would; its snapshot runs."""
    from domarkx.session.snapshot import SnapshotManager  # (the same as run's)

    if not os.path.isfile(ref):
        return open_store(), ref
    store = open_store(ref)
    result = SnapshotManager(store).import_file(Path(ref))
    return store, result.snapshot.snapshot_id


class _TerminalStream:
    """Shows the model's reply on stderr as it arrives (a terminal only, never in builds)."""

    def __init__(self) -> None:
        self.open = False

    def __call__(self, chunk: str) -> None:
        sys.stderr.write(chunk)
        sys.stderr.flush()
        self.open = not chunk.endswith("\n")

    def end(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False


def _terminal_stream() -> _TerminalStream | None:
    try:
        return _TerminalStream() if sys.stderr.isatty() else None
    except ValueError:  # stderr closed
        return None
