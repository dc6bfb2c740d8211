"""``domarkx run REF``: create an instance of a snapshot and run it; print its id."""

from __future__ import annotations

import sys

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "run",
        run,
        help="run a snapshot in a sandbox (an instance)",
        description="Create an instance of REF, run its setup script and code blocks, ask the "
        "model for a turn when the session ends with a user message, then destroy the sandbox.",
    )
    parser.add_argument("ref", metavar="REF", help="snapshot: tag, id, or unique id prefix")
    parser.add_argument("-i", "--interactive", action="store_true", help="step through blocks")
    parser.add_argument("--engine", metavar="E", help="override session-config's engine")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a code block fails or times out"
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="run model-written code on this machine without asking (local_shell)",
    )


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.session.agents import Agents  # (the same)
    from domarkx.session.approval import for_project
    from domarkx.session.instance import InstanceManager  # (the same)

    store = open_store()
    approval = for_project(store.root, yes=args.yes)
    if args.interactive:
        from domarkx.cli.interactive import InteractiveRun  # prompt_toolkit: asked for only

        instance = InteractiveRun(
            store, args.ref, engine=args.engine, keep=args.keep, approval=approval
        ).loop()
    else:
        manager = InstanceManager(store, approval=approval)
        manager.host_tools = Agents(store, approval).tools()  # send_message and the rest
        stream = _terminal_stream()
        try:
            instance = manager.run(
                args.ref, engine=args.engine, keep=args.keep, strict=False, stream=stream
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
