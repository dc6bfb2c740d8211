"""``domarkx export REF``: Markdown of an instance or a snapshot."""

from __future__ import annotations

import sys

from domarkx.cli.options import Args, Subparsers, add_command, open_store


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "export", run, help="write an instance or snapshot as Markdown"
    )
    parser.add_argument("ref", metavar="REF", help="instance or snapshot: id, id prefix, or tag")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--template", metavar="T", help="a jinja2 template of your own")


def run(args: Args) -> int:
    # The command's own modules (pathlib, tempfile, the pydantic models): loaded when
    # it runs, not by every `domarkx` start (`--help`, other commands).
    from pathlib import Path

    from domarkx.data.atomic import write_atomic  # (the same)
    from domarkx.session.export import export_ref  # (the same)

    template = Path(args.template) if args.template else None
    text = export_ref(open_store(), args.ref, template)
    if args.output:
        write_atomic(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0
