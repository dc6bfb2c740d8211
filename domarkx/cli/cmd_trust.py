"""``domarkx trust [PATH]``: accept the grants of a project's configuration, as ``direnv allow``.

A cloned repository's ``domarkx.toml`` is the repository asking; its grants
(keys for endpoints, ``approve = "auto"``, networks...) take effect once the
user trusts the file. The digest of its settings goes to the user's own
``$XDG_CONFIG_HOME/domarkx/trusted.toml``; a changed file is untrusted again.
"""

from __future__ import annotations

import os
import sys

from domarkx.cli.options import Args, Subparsers, add_command
from domarkx.data.layout import find_root
from domarkx.errors import DomarkxError


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "trust",
        run,
        help="accept the grants of a project's domarkx.toml (as `direnv allow`)",
        description="Record the project's configuration (domarkx.toml, or [tool.domarkx] in "
        "pyproject.toml) as trusted in your own configuration "
        "($XDG_CONFIG_HOME/domarkx/trusted.toml). Until then its grants (endpoints with keys, "
        'approve = "auto", Docker networks and capabilities, a shared cache) are ignored; a '
        "file changed since is untrusted again. DOMARKX_TRUST=1 trusts it for one command.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=".",
        metavar="PATH",
        help="the project: a folder in it, its configuration file or a document (default: here)",
    )
    parser.add_argument(
        "--revoke", action="store_true", help="forget the trust given to that project's file"
    )


def run(args: Args) -> int:
    # reason: start-up; the configuration's models load pydantic (~120 ms CPU), which
    # `domarkx --help` does not pay
    from domarkx import config
    from domarkx.config import trust  # reason: the same (it is part of the configuration)

    path = os.path.abspath(args.path)
    if not os.path.exists(path):
        raise DomarkxError(f"{args.path}: no such file or folder", hint="name a project folder")
    start = path if os.path.isdir(path) else os.path.dirname(path)
    root = find_root(start)
    settings = config.read(root)
    if settings.source is None or settings.digest is None:
        raise DomarkxError(
            f"{root} has no {config.CONFIG_FILE} (nor [tool.domarkx] in {config.PYPROJECT}): "
            "there is nothing to trust",
            hint="`domarkx init` writes one; grants go in it",
        )
    try:
        if args.revoke:
            record = trust.set_trust(settings.source, None)
            print(f"domarkx: {settings.source} is no longer trusted (recorded in {record})")
            return 0
        record = trust.set_trust(settings.source, settings.digest)
    except trust.TrustFileError as err:
        raise DomarkxError(str(err), hint="fix or remove that file") from None
    grants = settings.grants()
    what = "; ".join(grants) if grants else "nothing beyond the defaults"
    sys.stdout.write(f"trusted {settings.source}: it grants {what}\n")
    sys.stderr.write(f"domarkx: recorded in {record}; a change to its settings needs trust again\n")
    return 0
