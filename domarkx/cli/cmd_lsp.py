"""``domarkx lsp``: the language server for session documents, over stdio (docs/editors.md)."""

from __future__ import annotations

from domarkx.cli.options import Args, Subparsers, add_command
from domarkx.errors import DomarkxError


def register(subparsers: Subparsers) -> None:
    add_command(
        subparsers,
        "lsp",
        run,
        help="a language server for session documents (for editors; needs domarkx[lsp])",
        description="Speak the Language Server Protocol on stdin and stdout: errors as you type, "
        "hovers on macros, completion, and code lenses that answer, regenerate, fork and run "
        "sessions. Editors start it; see docs/editors.md.",
    )


def run(args: Args) -> int:
    try:
        # reason: pygls is the optional extra domarkx[lsp]; only this command loads it
        from domarkx.lsp.server import serve
    except ImportError as err:
        if err.name not in ("pygls", "lsprotocol", "cattrs") and not str(err.name).startswith(
            ("pygls.", "lsprotocol.")
        ):
            raise
        raise DomarkxError(
            f"`domarkx lsp` needs the package {err.name}, which is not installed",
            hint="pip install 'domarkx[lsp]'",
        ) from None
    serve()
    return 0
