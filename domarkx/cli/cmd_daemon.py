"""``domarkx daemon status|stop``: the build daemons of this user (``pipeline.daemon``)."""

from __future__ import annotations

import time

from domarkx.cli.options import Args, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "daemon", run, help="show or stop the build daemons that keep builds warm"
    )
    parser.add_argument(
        "action",
        choices=("status", "stop"),
        help="status: one line per daemon; stop: end them all (a build starts one again)",
    )


def run(args: Args) -> int:
    # The daemon's client (sockets, the installation's fingerprint): this command only.
    from domarkx.pipeline import daemon

    found = 0
    for path, status in daemon.running():
        found += 1
        if status is None:
            print(f"{path}: not answering (left by a daemon that ended)")
            continue
        if args.action == "stop":
            daemon.ask(path, daemon.QUIT)
            print(f"stopped daemon {status['pid']} ({path})")
            continue
        age = time.time() - float(status["started"])
        state = "current" if status.get("current") else "outdated: exits within a minute"
        print(
            f"daemon {status['pid']}: {status['python']}, up {age / 60:.0f} min, "
            f"{status['served']} worker(s) served, idle {status['idle_seconds']} s, "
            f"{state} ({path})"
        )
    if not found:
        where = daemon.folder() or "no private folder for daemons"
        print(f"no build daemon is running ({where})")
    return 0
