"""``domarkx migrate FILE``: rewrite an older-format session so that a run can use it."""

from __future__ import annotations

import sys
from pathlib import Path

from domarkx.cli.options import Args, Subparsers, add_command, open_store
from domarkx.errors import DocumentError


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "migrate",
        run,
        help="rewrite an older-format session (model client, `## unknow`) in place",
        description="Move a model `client` built in the setup script into session-config.model "
        "(provider, name, base_url; never a key), rename `## unknow` headings to `## tool`, "
        "make autogen `FunctionTool(f)` plain `f`. Every other byte stays; the file is replaced "
        "atomically. What cannot be converted is named by line, and the file is not changed "
        "(exit status 1).",
    )
    parser.add_argument("file", metavar="FILE", help="the session document to rewrite")


def run(args: Args) -> int:
    # The command's own modules (pydantic models, engines): loaded when it runs,
    # not by every `domarkx` start (`--help`, other commands).
    from domarkx.data.document_file import replace_document  # (the same: ~4 ms, tempfile)
    from domarkx.session.files import check_document
    from domarkx.session.legacy import changes_of, migrate_text, problems_of  # (the same)

    # The document's project decides what may be read and written: a link leading
    # outside it is refused, one inside it is followed (the file it names is rewritten).
    check_document(args.file, open_store(args.file).root, args.file)
    path = Path(args.file).resolve()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DocumentError(f"cannot read: {err.strerror}", file=args.file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("not UTF-8 text", file=args.file, hint="save it as UTF-8") from None
    problems = problems_of(text)
    if problems:  # a document left half-converted would not run: change nothing
        for line, what in problems:
            print(f"domarkx: error: {args.file}:{line}: cannot migrate: {what}", file=sys.stderr)
        print(f"domarkx: {args.file} was not changed", file=sys.stderr)
        return 1
    migrated = migrate_text(text)
    if migrated == text:
        print(f"{args.file}: nothing to migrate", file=sys.stderr)
        return 0
    replace_document(path, migrated, args.file)  # its mode kept; hard links refused
    for change in changes_of(text):  # what changed, one line each
        print(f"{args.file}: migrated {change}", file=sys.stderr)
    return 0
