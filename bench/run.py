"""domarkx's build speed in one table: cold, no-op, edit, watch, per block, start-up.

    python bench/run.py [--sizes 100,1000] [--repeat 5] [--quick] [--keep DIR]

Generates synthetic projects (bench/synth.py) in a temporary folder, runs each
case several times as a user would (``doit`` and ``domarkx`` in a fresh
process, from the project folder), and prints one Markdown table: median, p90
where it matters, the figure it is compared with (measured in the same run),
the ratio, the goal and PASS or MISS. Goals are judged at 1,000 sessions.
bench/README.md says what each case measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synth  # noqa: E402
import watch_latency  # noqa: E402

GOAL_SIZE = 1000
DVC_VENV = Path(tempfile.gettempdir()) / "domarkx-bench-dvc"
STAGES = ("parse", "expand", "snapshot", "run", "export")


# Measuring ------------------------------------------------------------------------
@dataclass
class Timing:
    samples: list[float]  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[round(0.9 * (len(ordered) - 1))]


@dataclass
class Row:
    case: str
    size: str
    median: str
    p90: str = ""
    compared: str = ""
    ratio: str = ""
    goal: str = ""
    result: str = ""


def environment() -> dict[str, str]:
    """The environment of the commands under test: this checkout's domarkx, the default store."""
    env = dict(os.environ)
    env.pop("DOMARKX_HOME", None)
    # As on a user's machine, modules load from their bytecode caches (``main``
    # compiles them once): without them every run would compile domarkx again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH.parent), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return env


ENV = environment()


def command(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {**ENV, **(env or {})}
    done = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed in {cwd} ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def timed(
    args: list[str],
    cwd: Path | Callable[[], Path],
    before: Callable[[], object] | None = None,
    env: dict[str, str] | None = None,
) -> float:
    """Seconds one run of ``args`` takes (``before`` runs first, untimed)."""
    if before is not None:
        before()
    folder = cwd() if callable(cwd) else cwd
    started = time.perf_counter()
    command(args, folder, env=env)
    return time.perf_counter() - started


def repeat(times: int, args: list[str], cwd, before=None, env=None) -> Timing:
    """``times`` runs; ``cwd`` may be a callable giving the folder of each run."""
    return Timing([timed(args, cwd, before, env) for _ in range(times)])


SHM = Path("/dev/shm")
ENV_NO_PREBUILD = {"DOMARKX_PREBUILD": "0"}
ENV_NO_DAEMON = {"DOMARKX_DAEMON": "0"}


def start_daemon(base: Path) -> Path:
    """The build daemon of this run, in a socket folder of its own, started and answering.

    As on a user's machine, where the first build that had something to rebuild
    started it (``DOMARKX_DAEMON=1``: on even where ``CI`` is set). Its folder is
    returned, for ``stop_daemons``.
    """
    runtime = Path(tempfile.mkdtemp(prefix="dmx-run-"))
    runtime.chmod(0o700)
    ENV.update({"XDG_RUNTIME_DIR": str(runtime), "DOMARKX_DAEMON": "1"})
    project = base / "daemon-start"
    synth.generate(str(project), 2)
    command(doit("snapshot"), project)
    from domarkx.pipeline import daemon

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sockets = list((runtime / "domarkx").glob("d-*.sock"))
        if sockets and daemon.ask(str(sockets[0]), daemon.STATUS):
            return runtime
        time.sleep(0.1)
    raise RuntimeError(f"the build daemon did not start; see {runtime}/domarkx/*.log")


def stop_daemons(runtime: Path) -> None:
    from domarkx.pipeline import daemon

    for path in (runtime / "domarkx").glob("d-*.sock"):
        daemon.ask(str(path), daemon.QUIT)
    shutil.rmtree(runtime, ignore_errors=True)


class FreshCopies:
    """A new copy of a project's sessions and dodo.py for every cold build.

    The copies are kept until ``remove``, as a fresh clone is built in a folder
    where nothing was just deleted: on ext4 without a journal, creating a file
    soon after thousands were deleted costs several times more (the kernel
    skips the recently freed inodes). ``delete_previous`` measures that case
    too (a build right after ``rm -rf`` of the last one).
    """

    def __init__(self, project: Path, base: Path, delete_previous: bool = False) -> None:
        self.project = project
        self.base = base
        self.delete_previous = delete_previous
        self.count = 0
        self.current: Path | None = None

    def next(self) -> None:
        if self.current is not None and self.delete_previous:
            shutil.rmtree(self.current, ignore_errors=True)
        self.count += 1
        self.current = self.base / f"copy{self.count}"
        shutil.copytree(self.project / "sessions", self.current / "sessions")
        shutil.copyfile(self.project / "dodo.py", self.current / "dodo.py")

    def folder(self) -> Path:
        assert self.current is not None
        return self.current

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def doit(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def domarkx(*args: str) -> list[str]:
    return [sys.executable, "-m", "domarkx", *args]


def fmt(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 10000:
        return f"{seconds:.1f} s"
    if ms >= 1000:
        return f"{seconds:.2f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.2f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# Comparison projects ----------------------------------------------------------------
FLOOR_DODO = '''\
"""doit's floor: the same number of file tasks as domarkx's graph, each a trivial action."""

import os

DOIT_CONFIG = {"backend": "json", "dep_file": ".doit-floor.json", "reporter": "executed-only"}
STAGES = ("parse", "expand", "snapshot", "run", "export")


def touch(target):
    with open(target, "w"):
        pass


def names():
    found = []
    for folder, dirs, files in os.walk("sessions"):
        dirs[:] = [d for d in dirs if d[0] not in "._"]
        for file in files:
            if file.endswith(".md") and file[0] not in "._":
                found.append(os.path.join(folder, file)[len("sessions/") : -len(".md")])
    return sorted(found)


def task_floor():
    all_names = names()
    for index, stage in enumerate(STAGES):
        yield {"basename": stage, "name": None}
        for name in all_names:
            source = f"sessions/{name}.md" if index == 0 else f"out/{STAGES[index - 1]}/{name}"
            target = f"out/{stage}/{name}"
            yield {
                "basename": stage,
                "name": name,
                "actions": [(touch, [target])],
                "file_dep": [source],
                "targets": [target],
            }
'''


def make_floor(project: Path, folder: Path, names: list[str]) -> None:
    shutil.copytree(project / "sessions", folder / "sessions")
    (folder / "dodo.py").write_text(FLOOR_DODO)
    for stage in STAGES:
        for name in names:
            (folder / "out" / stage / name).parent.mkdir(parents=True, exist_ok=True)


def make_makefile(project: Path, folder: Path, names: list[str]) -> None:
    """The same five chained targets per session; ``$(file ...)`` writes them without a shell."""
    shutil.copytree(project / "sessions", folder / "sessions")
    lines = [
        "MAKEFLAGS += --no-builtin-rules",
        ".SUFFIXES:",
        ".PHONY: all",
        "all: " + " ".join(f"out/export/{n}" for n in names),
        "",
    ]
    for name in names:
        previous = f"sessions/{name}.md"
        for stage in STAGES:
            target = f"out/{stage}/{name}"
            (folder / target).parent.mkdir(parents=True, exist_ok=True)
            lines += [f"{target}: {previous}", "\t$(file >$@,)", ""]
            previous = target
    (folder / "Makefile").write_text("\n".join(lines))


def dvc_command() -> tuple[list[str] | None, str]:
    """The ``dvc`` of a separate venv (made with pip when missing), or why there is none."""
    dvc = DVC_VENV / "bin" / "dvc"
    if not dvc.exists():
        log(f"installing dvc into {DVC_VENV} (once)")
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(DVC_VENV)], check=True, capture_output=True
            )
            done = subprocess.run(
                [str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc"],
                capture_output=True,
                text=True,
                check=False,
            )
        except (OSError, subprocess.CalledProcessError) as err:
            return None, f"dvc not installable: no venv ({err})"
        if done.returncode != 0 or not dvc.exists():
            lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            reason = (lines or done.stderr.splitlines() or ["pip failed"])[-1]
            return None, f"dvc not installable: {reason.strip()[:80]}"
    return [str(dvc)], ""


def make_dvc(dvc: list[str], project: Path, folder: Path, names: list[str]) -> None:
    """One stage per session running ``domarkx import``; its state recorded with ``dvc commit``.

    The outputs (snapshot ids) are copied from the domarkx build of the same
    sessions and recorded with ``dvc commit``: the dvc.lock is the one a first
    ``dvc repro`` would write, without 1,000 imports of a cold run.
    """
    shutil.copytree(project / "sessions", folder / "sessions")
    env = {**ENV, "DVC_NO_ANALYTICS": "1"}
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([*dvc, *args], cwd=folder, env=env, check=True, capture_output=True)
    stages = ["stages:"]
    for name in names:
        out = f"ids/{name}.id"
        source = project / ".domarkx" / "cache" / "snapshot" / f"{name}.id"
        (folder / out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / out)
        stages += [
            f"  {name.replace('/', '-')}:",
            f"    cmd: {sys.executable} -m domarkx import sessions/{name}.md > {out}",
            f"    deps: [sessions/{name}.md]",
            "    outs:",
            f"      - {out}:",
            "          cache: false",
        ]
    (folder / "dvc.yaml").write_text("\n".join(stages) + "\n")
    subprocess.run([*dvc, "commit", "-f", "-q"], cwd=folder, env=env, check=True)


# The cases ------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.rows: list[Row] = []
        # Copies of cold builds, deleted at the end (see ``FreshCopies``).
        self.leftovers: list[FreshCopies] = []
        self.noop: dict[int, float] = {}
        self.dvc, self.dvc_missing = (None, "left out: --no-dvc")
        if not args.no_dvc:
            self.dvc, self.dvc_missing = dvc_command()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        log(" | ".join(f for f in (row.case, row.size, row.median, row.ratio, row.result) if f))

    def size(self, n: int) -> None:
        r, cold_r = self.args.repeat, self.args.cold_repeat
        goal = n == GOAL_SIZE
        project = self.tmp / f"n{n}" / "project"
        names = [p[len("sessions/") : -len(".md")] for p in synth.generate(str(project), n)]
        # 1. Cold build to snapshots, each in a fresh copy of the project (creating
        # files in a folder that saw many gets slower): on disk, in RAM, without
        # the cold-build workers, and with two doit processes.
        log(f"{n} sessions: cold builds")
        fresh = FreshCopies(project, self.tmp / f"n{n}" / "cold")
        serial = repeat(cold_r, doit("snapshot"), fresh.folder, fresh.next)
        variants = [
            ("  same, `DOMARKX_DAEMON=0` (workers forked by the build)", ENV_NO_DAEMON),
            ("  same, `DOMARKX_PREBUILD=0` (no worker processes)", ENV_NO_PREBUILD),
        ]
        rows = []
        if SHM.is_dir():
            in_ram = FreshCopies(project, Path(tempfile.mkdtemp(prefix="domarkx-", dir=SHM)))
            ram = repeat(cold_r, doit("snapshot"), in_ram.folder, in_ram.next)
            in_ram.remove()
            rows.append(("  same, in RAM (tmpfs, /dev/shm)", ram))
        for label, env in variants:
            rows.append((label, repeat(cold_r, doit("snapshot"), fresh.folder, fresh.next, env)))

        parallel = repeat(
            cold_r, doit("-n", "2", "-P", "process", "snapshot"), fresh.folder, fresh.next
        )
        rows.append(("  same, `doit -n 2 -P process snapshot`", parallel))
        if n == max(self.args.sizes):
            # Last of all cold builds: the files it deletes slow down creating files
            # for a while (see ``FreshCopies``), and no cold build comes after it.
            deleting = FreshCopies(project, self.tmp / f"n{n}" / "cold-deleting", True)
            after_rm = repeat(cold_r, doit("snapshot"), deleting.folder, deleting.next)
            rows.append(("  same, right after deleting the last build's files", after_rm))
            self.leftovers.append(deleting)
        self.leftovers.append(fresh)
        self.add(
            Row(
                "cold build to snapshots (`doit snapshot`, on disk)",
                str(n),
                fmt(serial.median),
                goal="<= 2.5 s" if goal else "",
                result=verdict(serial.median <= 2.5) if goal else "",
            )
        )
        for label, timing in rows:
            self.add(
                Row(
                    label,
                    str(n),
                    fmt(timing.median),
                    compared=f"default {fmt(serial.median)}",
                    ratio=f"{serial.median / timing.median:.2f}x as fast",
                )
            )

        # 2. No-op build of everything, against doit's floor, make and DVC.
        log(f"{n} sessions: full build, then no-op builds")
        full = timed(doit(), project)

        # 6b. Listing the snapshots the build stored.
        listing = repeat(r, domarkx("snapshots"), project)
        self.add(Row(f"`domarkx snapshots` ({n} snapshots)", str(n), fmt(listing.median)))
        noop = repeat(r, doit(), project)
        self.noop[n] = noop.median
        floor_dir = self.tmp / f"n{n}" / "floor"
        make_floor(project, floor_dir, names)
        command(doit(), floor_dir)
        floor = repeat(r, doit(), floor_dir)
        ratio = noop.median / floor.median
        self.add(
            Row(
                f"no-op build of everything (`doit`, {5 * n} tasks)",
                str(n),
                fmt(noop.median),
                fmt(noop.p90),
                f"doit floor {fmt(floor.median)}",
                f"{ratio:.2f}x",
                "<= 0.93x floor" if n >= GOAL_SIZE else "",
                verdict(ratio <= 0.93) if n >= GOAL_SIZE else "",
            )
        )
        make_dir = self.tmp / f"n{n}" / "make"
        make_makefile(project, make_dir, names)
        command(["make", "-s", "-j2"], make_dir)
        make = repeat(r, ["make", "-s"], make_dir)
        self.add(
            Row(
                "  GNU make, same targets, no-op",
                str(n),
                fmt(make.median),
                compared=f"domarkx {fmt(noop.median)}",
                ratio=f"domarkx {noop.median / make.median:.1f}x slower",
            )
        )
        if self.dvc is not None:
            log(f"{n} sessions: dvc setup")
            dvc_dir = self.tmp / f"n{n}" / "dvc"
            make_dvc(self.dvc, project, dvc_dir, names)
            dvc = repeat(max(1, min(r, 3)), [*self.dvc, "repro", "-q"], dvc_dir)
            speed = dvc.median / noop.median
            self.add(
                Row(
                    "  DVC, one stage per session, `dvc repro` no-op",
                    str(n),
                    fmt(dvc.median),
                    compared=f"domarkx {fmt(noop.median)}",
                    ratio=f"domarkx {speed:.1f}x faster",
                    goal=">= 5x faster" if goal else "",
                    result=verdict(speed >= 5) if goal else "",
                )
            )
        else:
            self.add(Row("  DVC `dvc repro` no-op", str(n), f"n/a ({self.dvc_missing})"))

        # 3. One session edited; the shared include edited.
        log(f"{n} sessions: edits")
        edited = project / "sessions" / f"{names[1]}.md"
        original = edited.read_text()
        counter = iter(range(10**6))

        def edit_one() -> None:
            edited.write_text(original + f"\nEdit number {next(counter)}.\n")

        # The edit's goal holds at every size: an edit must not cost more in a small project.
        one = repeat(r, doit(), project, edit_one)
        extra = one.median - noop.median
        self.add(
            Row(
                "one session edited, rebuild to export (`doit`)",
                str(n),
                fmt(one.median),
                fmt(one.p90),
                f"no-op {fmt(noop.median)}",
                f"+{extra * 1000:.0f} ms",
                "<= no-op + 50 ms",
                verdict(extra <= 0.05),
            )
        )
        forked = repeat(r, doit(), project, edit_one, ENV_NO_DAEMON)
        self.add(
            Row(
                "  same, `DOMARKX_DAEMON=0` (the worker forked by the build)",
                str(n),
                fmt(forked.median),
                fmt(forked.p90),
                f"no-op {fmt(noop.median)}",
                f"+{(forked.median - noop.median) * 1000:.0f} ms",
            )
        )
        common = project / "sessions" / synth.COMMON
        common_text = common.read_text()

        def edit_common() -> None:
            common.write_text(common_text + f"\n- Rule number {next(counter)}.\n")

        shared = repeat(r, doit(), project, edit_common)
        self.add(
            Row(
                f"shared include edited ({n // 10} sessions), rebuild to export",
                str(n),
                fmt(shared.median),
                fmt(shared.p90),
                f"no-op {fmt(noop.median)}",
                f"+{(shared.median - noop.median) * 1000:.0f} ms",
            )
        )
        edited.write_text(original)
        common.write_text(common_text)

        # 4. Watch: save -> snapshot on disk (every other save edits the shared include).
        if n == self.watch_size:
            log(
                f"{n} sessions: watch, {self.args.saves} saves of a session, as many of the include"
            )
            command(doit(), project)
            one_ms, include_ms = watch_latency.measure(
                project, 2 * self.args.saves, echo=lambda m: log(m.lstrip("# "))
            )
            saves = Timing([ms / 1000 for ms in one_ms])
            self.add(
                Row(
                    f"watch: save -> new snapshot on disk ({len(one_ms)} saves)",
                    str(n),
                    fmt(saves.median),
                    fmt(saves.p90),
                    goal="p50 <= 150 ms" if goal else "",
                    result=verdict(saves.median <= 0.150) if goal else "",
                )
            )
            if include_ms:
                shared = Timing([ms / 1000 for ms in include_ms])
                self.add(
                    Row(
                        f"  watch: save of the include -> {n // 10} snapshots ({len(include_ms)})",
                        str(n),
                        fmt(shared.median),
                        fmt(shared.p90),
                    )
                )
        log(f"{n} sessions: done (the full build took {fmt(full)})")

    def blocks(self) -> None:
        import blocks

        log(f"per-block overhead, {self.args.blocks} blocks per engine")
        rows = blocks.measure_all(self.args.blocks, {"bash"})
        seen = set()
        for label, _language, _started, _first, median, p90 in rows:
            kind = "docker" if label.startswith("docker") else "local"
            if kind in seen:
                continue
            seen.add(kind)
            limit = 2.0 if kind == "local" else 5.0
            self.add(
                Row(
                    f"per code block, {label} (bash, persistent shell)",
                    "",
                    f"{median:.2f} ms",
                    f"{p90:.2f} ms",
                    goal=f"<= {limit:g} ms",
                    result=verdict(median <= limit),
                )
            )
        if "docker" not in seen:
            self.add(Row("per code block, docker", "", "n/a (no Docker engine or image)"))
        engines = [("local_shell", "")]
        if "docker" in seen:
            engines.append(("docker", "image: domarkx-test:busybox"))
        for engine, extra in engines:
            self.run_blocks(engine, extra)

    def run_blocks(self, engine: str, extra: str) -> None:
        """Per block through ``domarkx run``: sessions of N+1 blocks against one of 1 block.

        N is ``--blocks`` and, for the local shell, 10x that too (a long session
        must cost the same per block); runs of the sizes alternate, so that the
        machine's load falls on all of them alike.
        """
        n = self.args.blocks
        sizes = [n, 10 * n] if engine == "local_shell" else [n]
        folder = self.tmp / f"blocks-{engine}"
        (folder / "sessions").mkdir(parents=True, exist_ok=True)
        config = "\n".join(line for line in (f"engine: {engine}", extra) if line)
        for count in (1, *(size + 1 for size in sizes)):
            blocks = "".join(f"```bash\necho block {i}\n```\n\n" for i in range(count))
            text = f"```yaml session-config\n{config}\n```\n\n## user\n\nRun.\n\n## assistant\n\n"
            (folder / "sessions" / f"b{count}.md").write_text(text + blocks)
            command(domarkx("import", f"sessions/b{count}.md", "--tag", f"b{count}"), folder)
        times = max(3, self.args.repeat)
        samples: dict[int, list[float]] = {count: [] for count in (1, *(s + 1 for s in sizes))}
        for _ in range(times):
            for count in samples:
                samples[count].append(timed(domarkx("run", f"b{count}"), folder))
        one = statistics.median(samples[1])
        per_block = {size: (statistics.median(samples[size + 1]) - one) / size for size in sizes}
        limit = 2.0 if engine == "local_shell" else 5.0
        self.add(
            Row(
                f"  same through `domarkx run` ({engine}: {n + 1} blocks vs 1)",
                "",
                f"{per_block[n] * 1000:.2f} ms",
                compared=f"run of 1 block {fmt(one)}",
                goal=f"<= {limit:g} ms",
                result=verdict(per_block[n] * 1000 <= limit),
            )
        )
        if len(sizes) > 1:
            long, ratio = per_block[sizes[1]], per_block[sizes[1]] / per_block[n]
            self.add(
                Row(
                    f"  same, a long session ({engine}: {sizes[1] + 1} blocks vs 1)",
                    "",
                    f"{long * 1000:.2f} ms",
                    compared=f"{per_block[n] * 1000:.2f} ms at {n} blocks",
                    ratio=f"{ratio:.2f}x",
                    goal="<= 0.5 ms, <= 1.5x",
                    result=verdict(long * 1000 <= 0.5 and ratio <= 1.5),
                )
            )

    def models(self) -> None:
        """Cold builds of 40 sessions asking a loopback model (bench/llm_build.py)."""
        import llm_build

        sessions = 40
        cases = [(0.3, False, True), (2.0, False, False), (0.3, True, False)]
        for latency, tools, judged in cases:
            log(f"model calls: {sessions} sessions, {latency} s per answer, tools={tools}")
            times = llm_build.measure(sessions, latency, self.args.cold_repeat, tools, self.tmp)
            calls = sessions * (2 if tools else 1)
            bound = calls * latency
            what = "code in every reply, 2 calls each" if tools else "1 call each"
            for label, samples in times.items():
                median = statistics.median(samples)
                self.add(
                    Row(
                        f"cold `{label}`, {sessions} sessions asking a model "
                        f"({latency:g} s per answer, {what})",
                        str(sessions),
                        fmt(median),
                        compared=f"serial bound {fmt(bound)}",
                        ratio=f"{bound / median:.1f}x faster",
                        goal="<= 3 s" if judged else "",
                        result=verdict(median <= 3) if judged else "",
                    )
                )

    def startup(self) -> None:
        log("start-up")
        here = self.tmp
        times = max(10, 2 * self.args.repeat)
        bare = repeat(times, [sys.executable, "-c", "pass"], here)
        script = Path(sys.executable).with_name("domarkx")
        help_cmd = [str(script)] if script.exists() else domarkx()
        helped = repeat(times, [*help_cmd, "--help"], here)
        self.add(
            Row(
                "`domarkx --help`",
                "",
                fmt(helped.median),
                fmt(helped.p90),
                f"`python -c pass` {fmt(bare.median)}",
                f"+{(helped.median - bare.median) * 1000:.0f} ms",
                "<= 150 ms",
                verdict(helped.median <= 0.150),
            )
        )

    @property
    def watch_size(self) -> int:
        sizes = self.args.sizes
        return GOAL_SIZE if GOAL_SIZE in sizes else min(sizes)


def file_creation(folder: Path, count: int = 200) -> float:
    """Seconds to create (and write 5 KB to) one new file in ``folder``, the median."""
    probe = folder / ".probe"
    probe.mkdir()
    times = []
    for index in range(count):
        started = time.perf_counter()
        with open(probe / f"f{index}", "wb") as handle:
            handle.write(b"x" * 5000)
        times.append(time.perf_counter() - started)
    shutil.rmtree(probe)
    return statistics.median(times)


def table(rows: list[Row]) -> str:
    headers = ["case", "sessions", "median", "p90", "compared with", "ratio", "goal", "result"]
    cells = [headers] + [
        [r.case, r.size, r.median, r.p90, r.compared, r.ratio, r.goal, r.result] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100,1000", help="sessions per project (default 100,1000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--cold-repeat", type=int, default=3, help="runs per cold build (3)")
    parser.add_argument("--saves", type=int, default=30, help="saves timed in watch mode (30)")
    parser.add_argument("--blocks", type=int, default=100, help="code blocks per engine (100)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: 100 sessions")
    parser.add_argument("--no-dvc", action="store_true", help="leave DVC out")
    parser.add_argument(
        "--no-models", action="store_true", help="leave out the builds that ask a model"
    )
    parser.add_argument(
        "--tmp", metavar="DIR", help="where to make the projects (default: $TMPDIR)"
    )
    parser.add_argument("--keep", metavar="DIR", help="generate the projects in DIR and keep them")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.cold_repeat = "100", 2, 1
        args.saves, args.blocks = 5, 20
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]

    started = time.perf_counter()
    import compileall

    compileall.compile_dir(str(BENCH.parent / "domarkx"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="domarkx-bench-", dir=args.tmp) as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        creation = file_creation(folder)
        bench = Bench(args, folder)
        runtime = start_daemon(folder)
        try:
            for n in args.sizes:
                bench.size(n)
            bench.blocks()
            if not args.no_models:
                bench.models()
            bench.startup()
        finally:
            stop_daemons(runtime)
            for copies in bench.leftovers:
                copies.remove()
    print(table(bench.rows))
    line = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(
        f"\n`{line}`: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"medians of {args.repeat} runs ({args.cold_repeat} for cold builds); "
        f"projects in {folder.parent if not args.keep else folder}, where creating a file "
        f"takes {creation * 1000:.2f} ms; {time.perf_counter() - started:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
