"""``domarkx init [DIR]``: a new project: dodo.py, sessions/example.md, .gitignore, domarkx.toml."""

from __future__ import annotations

import sys

from domarkx.cli.options import Args, Subparsers, add_command
from domarkx.errors import DomarkxError

# What a new project holds: its path -> the template in domarkx/templates/project/.
PROJECT_FILES = {
    "dodo.py": "dodo.py",
    "sessions/example.md": "example.md",
    ".gitignore": "gitignore",
    "domarkx.toml": "domarkx.toml",
}
# With --templates: agents built on the session tools (docs/llm.md, "Agents"), as
# sessions/templates/<name>.md from domarkx/templates/project/agents/.
AGENT_TEMPLATES = ("ProjectManager", "RoleDesigner", "Worker", "DocAdmin", "ConversationSummarizer")


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "init",
        run,
        help="make a new project (dodo.py, sessions/example.md, .gitignore, domarkx.toml)",
        description="Make DIR a domarkx project: a dodo.py for doit, an example session, a "
        ".gitignore that ignores the caches in .domarkx/ and a commented domarkx.toml (what "
        "the project grants its sessions). Files already there are kept.",
    )
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="default: here")
    parser.add_argument(
        "--templates",
        action="store_true",
        help="also add sessions/templates/ with agents that use the session tools "
        f"({', '.join(AGENT_TEMPLATES)})",
    )


def run(args: Args) -> int:
    # importlib.resources and pathlib (~8 ms at start-up): only `domarkx init` needs them.
    from importlib import resources
    from pathlib import Path  # (the same)

    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise DomarkxError("not a folder", file=args.dir)
    templates = resources.files("domarkx") / "templates" / "project"
    made = 0
    files = dict(PROJECT_FILES)
    if args.templates:
        files.update({f"sessions/templates/{n}.md": f"agents/{n}.md" for n in AGENT_TEMPLATES})
    for relative, template in files.items():
        target = root / relative
        if target.exists():
            print(f"domarkx: kept {target} (already there)", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as handle:  # never overwrites (mode 0666 less umask)
            handle.write((templates / template).read_bytes())
        print(target)
        made += 1
    if made:
        where = "" if root == Path(".") else f"cd {args.dir} && "
        print(f"domarkx: next: {where}doit", file=sys.stderr)
    return 0
