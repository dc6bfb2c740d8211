"""Entry point of the ``domarkx`` command: argument parsing and error handling.

Each verb lives in its own ``cmd_<verb>.py`` module with ``register`` (its
arguments) and ``run`` (its work). Those modules import nothing heavy at load
time, so ``domarkx --help`` stays fast. Exit status: 0 done, 1 a user error
(one message on stderr, no traceback unless ``--debug``), 2 bad usage.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from domarkx import __version__
from domarkx.errors import DomarkxError

COMMANDS = (
    "import",
    "snapshots",
    "run",
    "instances",
    "export",
    "chat",
    "fork",
    "stop",
    "rm",
    "prune",
    "layers",
    "build",
    "watch",
    "init",
    "schema",
    "migrate",
    "lsp",
    "trust",
    "test",
    "daemon",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="domarkx",
        description="Keep LLM sessions as Markdown; import them as snapshots, run them as "
        "instances, build them like code.",
    )
    parser.add_argument("--version", action="version", version=f"domarkx {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"domarkx.cli.cmd_{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # Process signals (~2 ms): not for `--help` or a bad command line.
        from domarkx import signals

        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts: nothing ran yet
        print("domarkx: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    config = sys.modules.get("domarkx.config")  # not imported yet: nothing to forget
    if config is not None:
        config.forget()  # the project's configuration is read once per command
    signals.install()  # SIGTERM and SIGHUP clean up as Ctrl-C does
    try:
        return int(args.handler(args) or 0)
    except DomarkxError as err:
        if args.debug:
            raise
        print(f"domarkx: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt as interrupt:
        why = f" ({interrupt})" if isinstance(interrupt, signals.Terminated) else ""
        print(f"domarkx: interrupted{why}", file=sys.stderr)
        return signals.exit_status(interrupt)
    except BrokenPipeError:
        # `domarkx export X | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
    except OSError as err:
        # A read-only or full store, a folder where a file should be: one line.
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"domarkx: error: {where}{err.strerror or err}", file=sys.stderr)
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
            print(
                "  hint: make the store writable, or set DOMARKX_HOME to a folder that is",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
