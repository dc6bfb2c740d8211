"""Latency of ``domarkx watch``: from an editor's save to the snapshot written.

    python bench/watch_latency.py [--sessions 1000] [--saves 30] [--folder DIR]

Makes a synthetic project (``bench/synth.py``: sessions of ~5 KB, every
tenth including a shared partial), starts ``domarkx watch`` on it in a
subprocess, waits for its first build, then saves sessions the way editors
do (a temporary file renamed over the original) and times each save until
the session's snapshot id (``Layout.snapshot_out``, under ``.domarkx/cache/``) changes.
Every other save edits the shared partial instead, which rebuilds each
session that includes it; that latency is until the last of them is
written. Prints a table of p50 / p90 / max.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from synth import COMMON, generate  # noqa: E402

from domarkx.data.layout import Layout  # noqa: E402


def save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def wait_changed(paths: list[Path], old: list[str], timeout: float = 30.0) -> float:
    """perf_counter() when every one of ``paths`` differs from ``old`` (polled every 0.5 ms)."""
    deadline = time.perf_counter() + timeout
    pending = dict(zip(paths, old, strict=True))
    while pending:
        for path in list(pending):
            try:
                if path.read_text() != pending[path]:
                    del pending[path]
            except FileNotFoundError:
                pass
        if not pending:
            break
        if time.perf_counter() > deadline:
            raise SystemExit(f"watch did not write {sorted(map(str, pending))} in {timeout} s")
        time.sleep(0.0005)
    return time.perf_counter()


class Watch:
    def __init__(self, root: Path) -> None:
        env = dict(os.environ)
        env.pop("DOMARKX_HOME", None)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "domarkx", "watch"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if text in line:
                return line

    def stop(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    root: Path, saves: int = 30, partial: bool = True, echo=print
) -> tuple[list[float], list[float]]:
    """Milliseconds from save to snapshot(s) written, with ``domarkx watch`` running in ``root``.

    Saves a session, then (with ``partial``, every other save) the shared
    partial; returns the session saves' and the partial saves' latencies.
    """
    root = Path(root)
    names = sorted(
        p.relative_to(root / "sessions").as_posix()[: -len(".md")]
        for p in (root / "sessions").rglob("*.md")
        if not any(part[:1] in "._" for part in p.relative_to(root / "sessions").parts)
    )
    includers = [n for n in names if "include?path=" in (root / "sessions" / f"{n}.md").read_text()]
    layout = Layout(str(root))
    snapshot_id = Path(layout.abs(layout.snapshot_outs_dir))

    watch = Watch(root)
    started = time.monotonic()
    first = watch.expect(" built ")
    watch.expect("watching")
    echo(f"# first build: {first.split(' ', 1)[1]} ({time.monotonic() - started:.1f} s wall)")

    session_ms: list[float] = []
    include_ms: list[float] = []
    try:
        for i in range(saves):
            if not partial or i % 2 == 0 or not includers:
                name = names[(i * 7919) % len(names)]
                targets = [name]
                path = root / "sessions" / f"{name}.md"
                text = path.read_text() + f"\nEdit number {i}.\n"
            else:
                targets = includers
                path = root / "sessions" / COMMON
                text = path.read_text() + f"\nShared edit number {i}.\n"
            ids = [snapshot_id / f"{t}.id" for t in targets]
            old = [p.read_text() for p in ids]
            began = time.perf_counter()
            save(path, text)
            done = wait_changed(ids, old)
            line = watch.expect(" changed: ")
            (session_ms if len(targets) == 1 else include_ms).append((done - began) * 1000)
            if "failed" in line:
                echo(f"# unexpected: {line}")
            time.sleep(0.05)
    finally:
        watch.stop()
    return session_ms, include_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--folder", help="project folder (default: a new temporary one)")
    args = parser.parse_args()

    root = Path(args.folder or tempfile.mkdtemp(prefix="domarkx-watch-"))
    generate(str(root), args.sessions)
    session_ms, include_ms = measure(root, args.saves)
    includers = sum(
        1 for p in (root / "sessions").rglob("*.md") if "include?path=" in p.read_text()
    )

    print(f"# {args.sessions} sessions, {args.saves} saves, project in {root}")
    print(f"{'save of':<34} {'n':>3} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    rows = [("one session", session_ms), (f"the partial ({includers} includers)", include_ms)]
    for label, values in rows:
        if values:
            print(
                f"{label:<34} {len(values):>3} {statistics.median(values):>8.1f} "
                f"{percentile(values, 0.9):>8.1f} {max(values):>8.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
