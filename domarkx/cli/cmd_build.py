"""``domarkx build [TASK]...``: the doit task graph, as ``doit`` would run it.

Runs in this process through ``domarkx.pipeline.loader.BuildLoader``: the
project's ``dodo.py`` when there is one, else domarkx's own graph. With
``--check`` it builds up to the runs and fails when a committed export
differs from what the build produces, writing none (for CI).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from domarkx.cli.options import (
    Args,
    Subparsers,
    add_command,
    add_yes,
    environment,
    parse_params,
)
from domarkx.errors import DomarkxError

if TYPE_CHECKING:
    from domarkx.data.layout import Layout
    from domarkx.pipeline.shard import Shard

# doit's exit status for a bad command line or dodo.py (no such task, ...).
DOIT_USAGE_ERROR = 3


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "build",
        run,
        help="build every session: snapshot, run, export (doit's task graph)",
        description="Build sessions/**/*.md through doit's task graph, re-doing only what "
        "changed: parse, expand, snapshot, run, export. TASK is a stage (`snapshot`), a "
        "task (`export:a/b`) or any task of the project's dodo.py; default: everything.",
    )
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="tasks to build (default: all)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="build up to the runs and fail when a committed export differs from what the "
        "build produces; writes no export (for CI)",
    )
    parser.add_argument(
        "-n",
        "--process",
        type=int,
        default=0,
        metavar="N",
        help="run N tasks in parallel (default: DOMARKX_LLM_CONCURRENCY threads, 16, "
        "which overlap only the waits for a model)",
    )
    parser.add_argument(
        "-P",
        "--parallel-type",
        choices=("process", "thread"),
        default="process",
        help="what runs the N parallel tasks of -n (default: process)",
    )
    parser.add_argument(
        "-c",
        "--continue",
        dest="keep_going",
        action="store_true",
        help="go on with the other tasks after a failure",
    )
    parser.add_argument(
        "-a", "--always-execute", action="store_true", help="run tasks even when up to date"
    )
    parser.add_argument(
        "--param", action="append", metavar="K=V", help="value of a parameter macro (repeatable)"
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="build only shard I of N (every session falls in exactly one), or `auto`: "
        "from the CI's parallel-job variables (docs/scale.md)",
    )
    parser.add_argument(
        "--shard-count",
        type=int,
        metavar="N",
        help="the number of shards for --shard auto when the CI gives only an index "
        "(Kubernetes' JOB_COMPLETION_INDEX)",
    )
    parser.add_argument(
        "--store-durations",
        action="store_true",
        help="record how long each session's run took in .domarkx/durations.json (commit it: "
        "--shard balances the shards by it)",
    )
    add_yes(parser, "; the same as DOMARKX_YES=1 doit")


def doit_argv(args: Args, tasks: list[str]) -> list[str]:
    """The ``doit run`` command line that ``args`` stand for."""
    argv = ["run"]
    if args.process:
        argv += ["-n", str(args.process), "-P", args.parallel_type]
    if args.keep_going:
        argv.append("--continue")
    if args.always_execute:
        argv.append("--always-execute")
    argv += [f"{key}={value}" for key, value in parse_params(args.param).items()]
    return argv + tasks


def run(args: Args) -> int:
    # doit and the build (~90 ms): loaded when the command runs, not at every start.
    from domarkx import overlap
    from domarkx.data import lock  # (the same)
    from domarkx.data.layout import Layout, find_root  # (the same)
    from domarkx.pipeline.loader import BuildLoader, run_doit  # (the same)

    overlap.concurrency()  # a bad DOMARKX_LLM_CONCURRENCY is reported before anything runs
    layout = Layout.at(find_root())
    tasks = list(args.tasks)
    if args.check:
        if tasks:
            raise DomarkxError("--check builds every session; give no TASK with it")
        tasks = ["run"]  # the stage up to instances; exports are compared, not written
        args.keep_going = True  # report every session that fails, not just the first
    chosen = _shard(args, layout)
    with lock.BuildLock(layout.lock_file), _granted(args.yes), _sharded(chosen):
        try:
            status = run_doit(BuildLoader(layout), doit_argv(args, tasks))
        except SystemExit as ended:  # the reporter's end of an interrupted or failed build
            return int(ended.code or 0)
        if status == DOIT_USAGE_ERROR:
            return 2
        if args.store_durations:
            _store_durations(layout, chosen)
        if status != 0:
            return 1
        if args.check:
            return _check(layout, chosen)
    return 0


def _shard(args: Args, layout: Layout) -> Shard | None:
    """The shard ``--shard`` names (None: every session); a bad one is an error (exit 1) now.

    So is a broken durations file, which a shard reads to balance.
    """
    from domarkx.pipeline import shard  # dataclasses (~9 ms at start-up): a build's only

    if args.shard is None:
        if args.shard_count is not None:
            raise shard.ShardError("--shard-count goes with --shard auto")
        return None
    chosen = shard.parse(args.shard, args.shard_count)
    shard.read_durations(layout)
    return chosen


def _sharded(chosen: Shard | None) -> contextlib.AbstractContextManager[None]:
    """The shard for the build's task list (``DOMARKX_SHARD``), in this process and its own."""
    from domarkx.pipeline import shard  # see ``_shard``

    return environment(shard.ENV, None if chosen is None else str(chosen))


def _granted(yes: bool) -> contextlib.AbstractContextManager[None]:
    """``--yes`` for the build's tasks, in this process and the ones it starts."""
    if not yes:
        return contextlib.nullcontext()
    # The approval rules and the models (~100 ms): not for every `domarkx` start.
    from domarkx.session.approval import YES_ENV

    return environment(YES_ENV, "1")


def _store_durations(layout: Layout, chosen: Shard | None) -> None:
    """Write the durations of the build's sessions (``--store-durations``)."""
    from domarkx.pipeline import durations, shard  # the build's modules, as in ``run``

    names = layout.session_names()
    if chosen is not None:
        names = chosen.select(names, shard.read_durations(layout))
    recorded, held = durations.store(layout, names)
    print(
        f"domarkx: recorded the durations of {recorded} session{'' if recorded == 1 else 's'} "
        f"in {layout.durations_file} ({held} in all); commit it to balance --shard"
    )


def _check(layout: Layout, chosen: Shard | None = None) -> int:
    from domarkx.pipeline import shard  # the build's modules, as in ``run``
    from domarkx.pipeline.check import check_exports  # (the same)

    names = layout.session_names()
    if chosen is not None:
        names = chosen.select(names, shard.read_durations(layout))
    mismatches = check_exports(layout, names)
    if not mismatches:
        count = len(names)
        print(
            f"domarkx: every export matches the build ({count} session{'' if count == 1 else 's'})"
        )
        return 0
    for mismatch in mismatches:
        print(f"domarkx: {mismatch.describe()}", file=sys.stderr)
    shown = next((m for m in mismatches if m.diff), None)
    if shown is not None:
        lines = shown.diff[:60]
        sys.stderr.write("".join(lines))
        if len(shown.diff) > len(lines):
            sys.stderr.write(f"... ({len(shown.diff) - len(lines)} more lines)\n")
    print(
        f"domarkx: error: {len(mismatches)} export(s) out of date\n"
        f"  hint: run `domarkx build` (or `doit`) and commit {layout.exports_dir}/",
        file=sys.stderr,
    )
    return 1
