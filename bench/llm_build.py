"""Cold builds of sessions that ask a model: do the model calls overlap?

    python bench/llm_build.py [--sessions 40] [--latency 0.3] [--repeat 3] [--tools]

Serves chat completions on 127.0.0.1 (tests/chat_server.py), answering every
request after ``--latency`` seconds, writes ``--sessions`` sessions that each
end with a user question to that model, and times a cold ``doit`` and a cold
``domarkx build`` (each in a fresh folder, no flags). The serial bound is
sessions x latency (x 2 with ``--tools``). With ``--tools`` every reply holds a
code block, which runs in the session's sandbox and goes back to the model
(``max_turns: 2``): two model calls per session with the session's code
between them. Code a model writes runs on this machine only when the project
grants it: the project's ``domarkx.toml`` says ``approve = "auto"``, and the
builds run with ``DOMARKX_TRUST=1`` (as a user who ran ``domarkx trust``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the package tests, for its chat-completions server

from tests.chat_server import ChatServer, Response  # noqa: E402

SESSION = """\
```yaml session-config
model:
  provider: openai
  name: bench-model
  base_url: {base_url}
  max_turns: {turns}
```

## system

You answer in one line.

## user

Question number {n}: what is {n} + {n}?
"""

TOOL_REPLY = "Let me compute it.\n\n```bash\necho $((21 + 21))\n```"


# What the project grants: the model's code runs without asking (local_shell).
GRANTS = 'approve = "auto"\n'


def write_project(folder: Path, sessions: int, base_url: str, tools: bool) -> None:
    (folder / "sessions").mkdir(parents=True)
    (folder / "dodo.py").write_text("from domarkx.pipeline.tasks import *  # noqa: F403\n")
    if tools:
        (folder / "domarkx.toml").write_text(GRANTS)
    for n in range(sessions):
        text = SESSION.format(base_url=base_url, n=n, turns=2 if tools else 1)
        (folder / "sessions" / f"q{n:03}.md").write_text(text)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOMARKX_HOME", None)
    env.pop("DOMARKX_LLM", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # modules load from bytecode, as for a user
    env.pop("DOMARKX_YES", None)  # what runs is what the project grants, nothing more
    env["DOMARKX_TRUST"] = "1"  # the project's domarkx.toml is the user's own
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent), env.get("PYTHONPATH", "")])
    return env


def cold(
    command: list[str], base: Path, sessions: int, url: str, tools: bool, env: dict[str, str]
) -> float:
    folder = Path(tempfile.mkdtemp(prefix="llm-", dir=base))
    write_project(folder, sessions, url, tools)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    exports = list((folder / ".domarkx" / "exports").glob("*.md"))
    if len(exports) != sessions:
        raise RuntimeError(f"{len(exports)} exports for {sessions} sessions in {folder}")
    return seconds


def measure(
    sessions: int, latency: float, repeat: int, tools: bool, base: Path | None = None
) -> dict[str, list[float]]:
    """Seconds of each cold build: ``{"doit": [...], "domarkx build": [...]}``."""
    env = environment()
    reply = TOOL_REPLY if tools else "It is twice the number."
    commands = {
        "doit": [sys.executable, "-m", "doit"],
        "domarkx build": [sys.executable, "-m", "domarkx", "build"],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    with (
        tempfile.TemporaryDirectory(prefix="domarkx-llm-", dir=base) as tmp,
        ChatServer() as server,
    ):
        server.default = Response(text=reply, delay=latency)
        for _ in range(repeat):
            for label, command in commands.items():
                times[label].append(cold(command, Path(tmp), sessions, server.base_url, tools, env))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per answer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", action="store_true", help="code in every reply, 2 calls")
    parser.add_argument("--tmp", help="where to make the projects")
    args = parser.parse_args()
    base = Path(args.tmp) if args.tmp else None
    times = measure(args.sessions, args.latency, args.repeat, args.tools, base)
    calls = args.sessions * (2 if args.tools else 1)
    print(f"serial bound: {calls * args.latency:.1f} s ({calls} calls x {args.latency} s)")
    for label, samples in times.items():
        shown = ", ".join(f"{s:.2f}" for s in samples)
        print(f"{label}: median {statistics.median(samples):.2f} s ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
