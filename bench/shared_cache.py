"""A second machine's build with a warm shared cache, against a cold local build.

    python bench/shared_cache.py                       # 1,000 sessions, 3 runs per case
    python bench/shared_cache.py --sessions 300 --repeat 5 --block-seconds 0.2

The synthetic project (bench/synth.py: one runnable ``bash`` block in every
tenth session) gets a ``[cache]`` on a real S3 API server on 127.0.0.1 (moto's
server mode, started here). Machine A builds it cold and uploads
(``DOMARKX_CACHE_WRITE=1``); then each run of each case is a fresh clone (the
documents, no ``.domarkx/``), as a new CI runner is:

- cold, local: no shared cache (the ``[cache]`` table removed);
- B, warm shared cache: read-only, every run record is fetched, no code runs;
- B's no-op: B again, once built;
- A's upload: the cold build that also uploads (run once).

``--block-seconds S`` makes each runnable block sleep S seconds first (code
that costs something, as tests or a model's tool calls do); the default 0
keeps the synthetic blocks as cheap as they are. Objects and bytes moved come
from the bucket's listing and the run records fetched. Figures are
wall-clock medians of fresh ``python -m domarkx build`` processes; read them
to about 25% on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIABENCH0000000000",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION": "us-east-1",
}


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOMARKX_HOME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("DOMARKX_CACHE_WRITE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH.parent), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    env.update(CREDENTIALS)
    env["DOMARKX_TRUST"] = "1"  # a trusted checkout: its [cache] is used
    return env


ENV = environment()


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).with_name("moto_server")
    command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2).close()
            break
        except OSError:
            time.sleep(0.05)
    urllib.request.urlopen(urllib.request.Request(endpoint + "/bench", method="PUT")).close()
    return process, endpoint


def build(folder: Path, write: bool = False) -> float:
    env = dict(ENV)
    if write:
        env["DOMARKX_CACHE_WRITE"] = "1"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "domarkx", "build"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "warning" in done.stderr:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"build in {folder} ({done.returncode}), its last lines:\n{tail}")
    return elapsed


def clone(source: Path, target: Path, cache: bool = True) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".domarkx"))
    if not cache:
        (target / "domarkx.toml").unlink()
    return target


def bucket_usage(endpoint: str) -> tuple[int, int]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        "bench",
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        client_options={"allow_http": True},
    )
    count = size = 0
    for batch in obstore.list(store):
        for meta in batch:
            count += 1
            size += meta["size"]
    return count, size


def fetched(folder: Path) -> tuple[int, int]:
    """The run records a clone holds: what it fetched."""
    from domarkx.data.layout import Layout

    records = folder / Path(Layout(str(folder)).run_record("k")).parent
    found = list(records.glob("*.json"))
    return len(found), sum(p.stat().st_size for p in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-seconds", type=float, default=0.0)
    parser.add_argument("--tmp", type=Path, default=None)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="domarkx-shared-", dir=options.tmp))
    server, endpoint = start_s3()
    try:
        source = work / "source"
        subprocess.run(
            [
                sys.executable,
                str(BENCH / "synth.py"),
                str(source),
                "--sessions",
                str(options.sessions),
            ],
            check=True,
            env=ENV,
            capture_output=True,
        )
        if options.block_seconds:
            for path in (source / "sessions").rglob("*.md"):
                text = path.read_text()
                if "```bash\n" in text:
                    path.write_text(
                        text.replace("```bash\n", f"```bash\nsleep {options.block_seconds}\n")
                    )
        (source / "domarkx.toml").write_text(
            f'[cache]\nurl = "s3://bench/team"\nendpoint = "{endpoint}"\n'
        )
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(BENCH.parent / "domarkx")])
        print(f"# {options.sessions} sessions, {options.repeat} runs per case", file=sys.stderr)

        upload = build(clone(source, work / "a"), write=True)
        objects, size = bucket_usage(endpoint)
        cold = [build(clone(source, work / "cold", cache=False)) for _ in range(options.repeat)]
        warm, noop = [], []
        for _ in range(options.repeat):
            b = clone(source, work / "b")
            warm.append(build(b))
            noop.append(build(b))
        records, record_bytes = fetched(work / "b")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, seconds: float, note: str = "") -> str:
        return f"| {name} | {seconds:.2f} s | {note} |"

    cold_s, warm_s, noop_s = (statistics.median(x) for x in (cold, warm, noop))
    print(f"\n{options.sessions} sessions, block cost {options.block_seconds} s, medians\n")
    print("| case | time | note |")
    print("|---|---|---|")
    print(row("cold build, local (no shared cache)", cold_s, "every block runs"))
    print(row("A: cold build + upload", upload, f"{objects} objects, {size / 1024:.0f} KiB put"))
    print(
        row(
            "B: fresh clone, warm shared cache",
            warm_s,
            f"{cold_s / warm_s:.2f}x the cold build's speed; no block runs; "
            f"{records} run records fetched ({record_bytes / 1024:.0f} KiB, 2 GETs each)",
        )
    )
    print(row("B: no-op after that", noop_s, f"warm build = no-op + {warm_s - noop_s:.2f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
