"""Every bad input: exit 1, one message naming the file and line, bounded, nothing stored.

The documents live in ``tests/bad_inputs/`` (partials they include in
``_parts/``); the file-system cases (named pipes, symlink loops, devices,
folders) are made here, since git cannot hold them. Each case runs
``domarkx import`` in a process of its own under resource limits (address
space, CPU seconds, file size), as a careless user or a hostile document
would.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CORPUS = Path(__file__).with_name("bad_inputs")
DOCUMENTS = sorted(p.name for p in CORPUS.glob("*.md"))

SECONDS = 10.0  # a case still running after three times this has hung (CPU_SECONDS bounds work)
MEMORY = 1 << 30  # address space a case may add to what it starts with
CPU_SECONDS = 10
FILE_SIZE = 16 << 20  # no file written may grow past this


def _address_space() -> int:
    """This process's virtual size now: a forked child starts with all of it."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def import_bounded(root: Path, target: str) -> tuple[int, str, float]:
    """``domarkx import TARGET`` in a forked child under resource limits.

    A fork of this process (domarkx already imported) costs milliseconds where
    a new interpreter costs half a second; the child is a process of its own,
    with its own limits, killed at the deadline.
    """
    from domarkx.cli import main as cli_main
    from domarkx.session import snapshot  # noqa: F401  (imported once, in the parent)

    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: limits, then the command as a user runs it
        code = 70
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            memory = _address_space() + MEMORY
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))
            os.chdir(root)
            os.environ["DOMARKX_HOME"] = str(root / ".domarkx")
            sys.stderr = os.fdopen(2, "w", closefd=False)
            code = cli_main.main(["import", target])
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = started + SECONDS * 3
    os.set_blocking(read_end, False)
    status = None
    while status is None:
        try:
            chunk = os.read(read_end, 65536)
            if chunk:
                chunks.append(chunk)
        except BlockingIOError:
            pass
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read_end)
            pytest.fail(f"{target}: still running after {SECONDS * 3:g} s")
        else:
            time.sleep(0.005)
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode("utf-8", "replace"), seconds


def check(root: Path, target: str, needs_line: bool = True) -> str:
    code, err, _ = import_bounded(root, target)
    assert "Traceback" not in err, err
    assert code == 1, (code, err)
    lines = err.splitlines()
    assert lines, "no message"
    where = r"sessions/[^:]+:\d+: " if needs_line else r"sessions/[^:]+(:\d+)?: "
    assert re.match(r"domarkx: error: " + where, lines[0]), lines[0]
    assert all(line.startswith("  hint: ") for line in lines[1:]), err  # one message
    store = root / ".domarkx"
    written = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    assert written == [], f"written to the store: {written}"
    return lines[0]


@pytest.fixture
def corpus_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(CORPUS, root / "sessions")
    return root


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_bad_document(corpus_project: Path, name: str) -> None:
    check(corpus_project, f"sessions/{name}")


def _fifo(root: Path) -> str:
    os.mkfifo(root / "sessions" / "pipe.md")
    return "sessions/pipe.md"


def _fifo_include(root: Path) -> str:
    os.mkfifo(root / "sessions" / "_pipe.md")
    (root / "sessions" / "inc.md").write_text("## user\n\n[@x](domarkx://include?path=_pipe.md)\n")
    return "sessions/inc.md"


def _self_loop(root: Path) -> str:
    os.symlink("loop.md", root / "sessions" / "loop.md")
    return "sessions/loop.md"


def _two_link_loop(root: Path) -> str:
    os.symlink("b.md", root / "sessions" / "a.md")
    os.symlink("a.md", root / "sessions" / "b.md")
    return "sessions/a.md"


def _folder(root: Path) -> str:
    (root / "sessions" / "dir.md").mkdir()
    return "sessions/dir.md"


def _missing(root: Path) -> str:
    return "sessions/nothing-here.md"


def _device(root: Path) -> str:
    os.symlink("/dev/zero", root / "sessions" / "zero.md")
    return "sessions/zero.md"


def _broken_link(root: Path) -> str:
    os.symlink("gone.md", root / "sessions" / "broken.md")
    return "sessions/broken.md"


def _include_loop(root: Path) -> str:
    os.symlink("_loop.md", root / "sessions" / "_loop.md")
    (root / "sessions" / "inc.md").write_text("## user\n\n[@x](domarkx://include?path=_loop.md)\n")
    return "sessions/inc.md"


def _include_device(root: Path) -> str:
    os.symlink("/dev/zero", root / "sessions" / "_zero.md")
    (root / "sessions" / "inc.md").write_text("## user\n\n[@x](domarkx://include?path=_zero.md)\n")
    return "sessions/inc.md"


# name -> (make the case, return what to import; whether a line number applies)
FILE_SYSTEM: dict[str, tuple[Callable[[Path], str], bool]] = {
    "named pipe": (_fifo, False),
    "named pipe included": (_fifo_include, True),
    "symlink to itself": (_self_loop, False),
    "two symlinks in a loop": (_two_link_loop, False),
    "folder named .md": (_folder, False),
    "missing file": (_missing, False),
    "device": (_device, False),
    "broken symlink": (_broken_link, False),
    "symlink loop included": (_include_loop, True),
    "device included": (_include_device, True),
}


@pytest.mark.parametrize("case", sorted(FILE_SYSTEM))
def test_a_bad_file(tmp_path: Path, case: str) -> None:
    root = tmp_path / "project"
    (root / "sessions").mkdir(parents=True)
    make, needs_line = FILE_SYSTEM[case]
    check(root, make(root), needs_line)


def test_the_corpus_is_large_enough() -> None:
    assert len(DOCUMENTS) + len(FILE_SYSTEM) >= 60
