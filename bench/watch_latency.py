"""Watch latency: from an editor's save to the new snapshot on disk, p50 and p90.

    python bench/watch_latency.py [--sessions 1000] [--saves 30] [DIR]

Makes a synthetic project (bench/synth.py) in DIR (default: a temporary
folder), builds it up to snapshots, starts ``domarkx watch`` in it and saves
sessions one after another the way editors do (a temporary file, then a
rename). Each save is timed until the session's new snapshot id is written
(``.domarkx/cache/snapshot/<name>.id``, written after the snapshot itself);
the next save waits for the watcher's line about the previous one.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def environment() -> dict[str, str]:
    """The environment of the commands under test: this checkout's domarkx, the default store."""
    env = dict(os.environ)
    env.pop("DOMARKX_HOME", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return env


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def _wait_for(lines: queue.Queue, word: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"domarkx watch printed no line with {word!r} in {timeout:.0f} s")
        line = lines.get(timeout=left)
        if line is None:
            raise RuntimeError("domarkx watch exited")
        if word in line:
            return line


def _save(path: Path, text: str) -> None:
    """Write ``text`` as an editor saves: a temporary file in the folder, then a rename."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def measure(root: Path, saves: int = 30, sessions: list[str] | None = None) -> list[float]:
    """Seconds from save to new snapshot id, for ``saves`` saves, with ``domarkx watch`` on.

    ``sessions`` are project-relative paths of sessions to edit in turn
    (default: the first ten of ``sessions/``); the project should be built up
    to snapshots already, or the watcher's first build is a cold one.
    """
    root = Path(root)
    if not sessions:
        found = sorted(
            p.relative_to(root).as_posix()
            for p in (root / "sessions").rglob("*.md")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        )
        sessions = found[:10]
    originals = {path: (root / path).read_text(encoding="utf-8") for path in sessions}
    process = subprocess.Popen(
        [sys.executable, "-m", "domarkx", "watch"],
        cwd=root,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    times = []
    try:
        _wait_for(lines, "watching", 600)
        for index in range(saves):
            path = sessions[index % len(sessions)]
            name = path[len("sessions/") : -len(".md")]
            id_file = root / ".domarkx" / "cache" / "snapshot" / f"{name}.id"
            before = id_file.read_text() if id_file.exists() else ""
            text = originals[path].rstrip("\n") + f"\n\nSave number {index}.\n"
            started = time.perf_counter()
            _save(root / path, text)
            deadline = started + 60
            while True:
                try:
                    now_id = id_file.read_text()
                except FileNotFoundError:
                    now_id = ""
                if now_id and now_id != before:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no new snapshot for {path} after 60 s")
                time.sleep(0.0005)
            times.append(time.perf_counter() - started)
            _wait_for(lines, "changed", 60)
            time.sleep(0.05)  # let the watcher go back to waiting
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for path, text in originals.items():
            _save(root / path, text)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="project folder (default: a new tmp one)")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions (default 1000)")
    parser.add_argument("--saves", type=int, default=30, help="saves to time (default 30)")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import synth

    with tempfile.TemporaryDirectory(prefix="domarkx-watch-") as tmp:
        root = Path(args.folder or tmp)
        if not (root / "sessions").is_dir():
            synth.generate(str(root), args.sessions)
        subprocess.run(
            [sys.executable, "-m", "doit", "snapshot"],
            cwd=root,
            env=environment(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times = sorted(measure(root, args.saves))
    p50 = statistics.median(times) * 1000
    p90 = times[int(0.9 * (len(times) - 1))] * 1000
    print(f"save -> snapshot: p50 {p50:.1f} ms, p90 {p90:.1f} ms ({len(times)} saves)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
