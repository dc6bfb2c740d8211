"""Per-block overhead of the engines: median and p90 of blocks that print one line.

    python bench/blocks.py [--blocks 100]

Runs the local engine (bash and python) and, when a Docker engine answers and
the images exist (bench/docker-image.sh [--python]), the Docker engine. The
sandbox's start-up and each language's first block (which starts its
interpreter) are shown apart and left out of the per-block figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.engine import Engine, engine_class

BLOCKS = {"bash": "echo hello", "python": "print('hello')"}


def measure(engine: Engine, language: str, blocks: int) -> tuple[float, float, float]:
    """First block (starts the interpreter), then median and p90 of ``blocks`` more, in ms."""
    start = time.perf_counter()
    engine.run(language, BLOCKS[language], 30)
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        result = engine.run(language, BLOCKS[language], 30)
        times.append((time.perf_counter() - start) * 1000)
        assert result.stdout == "hello\n", result
    times.sort()
    return first, statistics.median(times), times[int(0.9 * (len(times) - 1))]


def cases() -> list[tuple[str, str, dict[str, str], list[str]]]:
    """(label, engine, config, languages) of every engine that can run here."""
    found = [("local_shell", "local_shell", {}, ["bash", "python"])]
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        print(f"(docker: skipped, no Docker engine answers: {type(exc).__name__})")
        return found
    for image, languages in (
        ("domarkx-test:busybox", ["bash"]),
        ("domarkx-test:python", ["bash", "python"]),
    ):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            print(f"(docker {image}: skipped, build it with bench/docker-image.sh)")
            continue
        found.append((f"docker {image}", "docker", {"image": image}, languages))
    return found


def measure_all(blocks: int = 100, languages: set[str] | None = None) -> list[tuple]:
    """(label, language, start ms, first block ms, median ms, p90 ms) of every engine here."""
    rows = []
    for label, name, config, engine_languages in cases():
        wanted = [lang for lang in engine_languages if languages is None or lang in languages]
        if not wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            engine = engine_class(name)(ExecutionConfig(engine=name, **config), Path(tmp))
            start = time.perf_counter()
            try:
                engine.start()
            except EngineError as exc:
                print(f"({label}: skipped, {exc.message})")
                continue
            started = (time.perf_counter() - start) * 1000
            try:
                for language in wanted:
                    rows.append((label, language, started, *measure(engine, language, blocks)))
            finally:
                engine.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100, help="blocks per row (default 100)")
    args = parser.parse_args()
    rows = measure_all(args.blocks)
    print(
        f"{'engine':<30} {'language':<8} {'start ms':>9} {'1st block ms':>13}"
        f" {'median ms':>10} {'p90 ms':>8}"
    )
    for label, language, started, first, median, p90 in rows:
        print(
            f"{label:<30} {language:<8} {started:>9.1f} {first:>13.1f} {median:>10.3f} {p90:>8.3f}"
        )
    print(f"({args.blocks} blocks per row, each printing one line)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
