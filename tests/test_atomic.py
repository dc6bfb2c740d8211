"""Atomic writes (``data.atomic``): whole files, their folders made, temporaries swept."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

from domarkx.data.atomic import remove_orphans, remove_stale, write_atomic, write_if_changed
from tests.support import process_env, wait_for


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_write_makes_its_folders_and_leaves_only_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "c.json"
    write_atomic(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.json"]
    write_atomic(str(target), b"two", durable=True)
    assert target.read_bytes() == b"two"
    write_atomic(target, b"three", mode=0o600)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.json"]


def test_write_if_changed_leaves_the_same_content_alone(tmp_path):
    target = tmp_path / "x.json"
    assert write_if_changed(target, "same")
    before = os.stat(target)
    assert not write_if_changed(target, b"same")
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert write_if_changed(target, "other")
    assert target.read_text() == "other"


def test_a_temporary_name_left_by_a_dead_process_of_the_same_pid_is_skipped(tmp_path):
    # A fresh process numbers its temporary files from 0: the first names it would
    # take are there already (a writer of the same pid, long dead, left them).
    script = (
        "import os, sys\n"
        "from domarkx.data.atomic import write_atomic\n"
        "folder = sys.argv[1]\n"
        "for n in range(5):\n"
        "    open(os.path.join(folder, f'.f.json.{n}.{os.getpid()}.tmp'), 'w').write('old')\n"
        "write_atomic(os.path.join(folder, 'f.json'), 'new')\n"
        "print(os.getpid())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=process_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(done.stdout)
    assert (tmp_path / "f.json").read_text() == "new"
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert left == [f".f.json.{n}.{pid}.tmp" for n in range(5)]
    # Their writer is gone: the sweeps remove them.
    assert remove_stale(tmp_path / "f.json") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_killed_writer_s_temporary_file_is_swept_and_a_live_one_kept(tmp_path):
    folder = tmp_path / "store" / "snapshots"
    script = (
        "import os, sys, time\n"
        "from domarkx.data import atomic\n"
        "os.replace = lambda *a: time.sleep(3600)\n"
        "atomic.write_atomic(sys.argv[1], 'half')\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(folder / "s.json")], env=process_env()
    )
    try:
        assert wait_for(lambda: folder.is_dir() and any(folder.glob(".s.json.*.tmp")), within=30)
        live = folder / f".t.json.0.{os.getpid()}.tmp"  # this process is alive
        live.write_text("in progress")
        assert remove_orphans(tmp_path) == 0  # its writer is alive still
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    assert remove_orphans(tmp_path) == 1
    assert sorted(p.name for p in folder.iterdir()) == [live.name]
