"""Turn layers: what a run costs when it starts from a layer (one command, one table).

- growing: a session grows by one message with a 0.5 s block per turn (as
  ``domarkx chat -m`` turns do across processes); each turn is a new run of the
  whole document. Turn 20 against turn 2, with layers and without.
- edit-last: a 20-message session (0.5 s per block) built once, then its last
  message's code edited and run again, against the cost of that one message.
- save: the time spent saving a layer per turn (local shell; Docker with
  --docker and the domarkx-test:python image).

Usage: python bench/layers.py [--turns 20] [--block 0.5] [--docker] [--docker-only]

Each project's Docker layer images are removed at the end (``prune_layers``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from domarkx.data.layout import project_id
from domarkx.data.store import Store
from domarkx.execution.docker import DockerEngine
from domarkx.session.instance import InstanceManager
from domarkx.session.snapshot import SnapshotManager


def doc(n: int, block: float, engine: str, edited: bool = False) -> str:
    head = f"```yaml session-config\nengine: {engine}\n"
    head += "image: domarkx-test:python\n" if engine == "docker" else ""
    text = head + "```\n\n"
    for i in range(1, n + 1):
        extra = "_edited" if edited and i == n else ""
        text += f"## assistant\n\n```python\ntime.sleep({block})\nv{i}{extra} = {i}\n```\n\n"
    return text.replace("time.sleep", "import time\ntime.sleep", 1)


def run_once(root: Path, text: str, layers: bool) -> tuple[float, float]:
    os.environ["DOMARKX_LAYERS"] = "1" if layers else "0"
    (root / "sessions" / "s.md").write_text(text)
    store = Store(root / ".domarkx", root)
    SnapshotManager(store).import_file(root / "sessions" / "s.md")
    manager = InstanceManager(store)
    saving: list[float] = []
    original = InstanceManager.finish

    def finish(self: InstanceManager, instance, sandbox, *, keep=False):  # type: ignore[no-untyped-def]
        run = self.layer_runs.get(instance.instance_id)
        saving.append(run.save_seconds if run is not None else 0.0)
        original(self, instance, sandbox, keep=keep)

    InstanceManager.finish = finish  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        manager.run("s")
        return time.perf_counter() - start, sum(saving)
    finally:
        InstanceManager.finish = original  # type: ignore[method-assign]


PROJECTS: list[Path] = []


def project() -> Path:
    root = Path(tempfile.mkdtemp(prefix="dmx-layers-"))
    (root / "sessions").mkdir()
    PROJECTS.append(root)
    return root


def clean_up(docker: bool) -> None:
    """Remove the bench projects' layer images (none of them is kept)."""
    if docker:
        for root in PROJECTS:
            DockerEngine.prune_layers(set(), project_id(str(root / ".domarkx")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--block", type=float, default=0.5)
    parser.add_argument("--docker", action="store_true")
    parser.add_argument("--docker-only", action="store_true")
    args = parser.parse_args()
    engines = [] if args.docker_only else ["local_shell"]
    engines += ["docker"] if args.docker or args.docker_only else []
    try:
        rows = measure(engines, args.turns, args.block)
    finally:
        clean_up("docker" in engines)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value:.3f}")


def measure(engines: list[str], turns: int, block: float) -> list[tuple[str, float]]:
    rows = []
    args = argparse.Namespace(turns=turns, block=block)
    for engine in engines:
        for layers in (True, False):
            root = project()
            times, saves = [], []
            for n in range(1, args.turns + 1):
                took, saved = run_once(root, doc(n, args.block, engine), layers)
                times.append(took)
                saves.append(saved)
            label = f"{engine}, layers {'on' if layers else 'off'}"
            rows.append((f"growing: turn {args.turns} / turn 2 ({label})", times[-1] / times[1]))
            rows.append((f"growing: turn 2 s ({label})", times[1]))
            rows.append((f"growing: turn {args.turns} s ({label})", times[-1]))
            if layers:
                rows.append(
                    (f"save per turn ms ({engine})", 1000 * sum(saves[1:]) / (len(saves) - 1))
                )
            edited, _ = run_once(root, doc(args.turns, args.block, engine, edited=True), layers)
            single, _ = run_once(project(), doc(1, args.block, engine), False)
            rows.append((f"edit-last: rebuild / one message ({label})", edited / single))
    return rows


if __name__ == "__main__":
    main()
