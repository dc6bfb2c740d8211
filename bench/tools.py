"""Overhead of one tool call round trip through the sandbox, local and Docker.

    python bench/tools.py [--calls 200]

For each engine that can run here (local_shell; docker with domarkx-test:python when a
Docker engine answers), after the setup script has defined a function, it measures:

- ``python block``: a plain Python block that prints one line (the floor: one trip through
  the persistent Python process);
- ``describe``: deriving the schemas of two functions in the sandbox (once per run);
- ``call``: one call as the tool loop makes it (``ToolBox.call``: arguments checked
  against the schema, the call block written, run, its answer read back);
- ``bash tool``: one call of the built-in ``bash`` tool (approval granted).

Medians and p90 in milliseconds; the first call of each kind is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domarkx.data.models import ExecutionConfig
from domarkx.execution.engine import Engine, engine_class
from domarkx.llm.reply import ToolCall
from domarkx.llm.tools import ToolBox
from domarkx.session.blocks import outputs_of

SETUP = '''
def add(a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


def echo(text: str) -> str:
    """Give the text back."""
    return text
'''


def timed(action: Callable[[], object], n: int) -> tuple[float, float]:
    action()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def measure(engine: Engine, calls: int) -> dict[str, tuple[float, float]]:
    engine.start()
    try:
        assert engine.run("python", SETUP, 30).ok

        def python(code: str):
            return engine.run("python", code, 30)

        def run_code(language: str, code: str, where: str):
            return outputs_of(engine.run(language, code, 30))

        box = ToolBox.declare(
            ["add", "echo", "bash"], setup_code=SETUP, run_code=run_code, python=python
        )
        add = ToolCall(id="call_1", name="add", arguments='{"a": 2, "b": 3}')
        bash = ToolCall(id="call_2", name="bash", arguments='{"code": "echo hi"}')
        assert box.call(add, "bench").text == "5"
        assert "hi" in box.call(bash, "bench").text
        return {
            "python block": timed(lambda: python("print('hello')"), calls),
            "describe": timed(
                lambda: ToolBox.declare(
                    ["add", "echo"], setup_code=SETUP, run_code=run_code, python=python
                ),
                max(10, calls // 10),
            ),
            "call": timed(lambda: box.call(add, "bench"), calls),
            "bash tool": timed(lambda: box.call(bash, "bench"), calls),
        }
    finally:
        engine.stop()


def engines() -> list[tuple[str, str, dict[str, str]]]:
    found = [("local_shell", "local_shell", {})]
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get("domarkx-test:python")
    except Exception as exc:
        print(
            f"(docker: skipped: {type(exc).__name__}; bench/docker-image.sh --python builds the image)"
        )
        return found
    found.append(
        ("docker (python image)", "docker", {"engine": "docker", "image": "domarkx-test:python"})
    )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per figure (default 200)")
    args = parser.parse_args()
    rows = []
    for label, name, config in engines():
        with tempfile.TemporaryDirectory() as tmp:
            engine = engine_class(name)(ExecutionConfig(**config), Path(tmp))
            for case, (median, p90) in measure(engine, args.calls).items():
                rows.append((label, case, f"{median:.2f}", f"{p90:.2f}"))
    headers = ("engine", "what", "median ms", "p90 ms")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(4)]
    for row in [headers, *rows]:
        print("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
