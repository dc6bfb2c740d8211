"""Chat against the file system and a careless world: what it writes keeps the document's
mode, never breaks its hard links silently, leaves no temporary file after SIGKILL, copes
with a long CJK name (in chat and in a plain doit build); what an error said it keeps
survives ``prune``; a huge retry-after is told as the one request it was. Real processes,
real files, a real loopback server.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

from domarkx.data.layout import BUILD_CACHES, STAGES
from tests.chat_server import ChatServer
from tests.support import doit, domarkx, new_project, process_env, wait_for

SCRIPTED = """\
---
scripted_replies:
  - "Noted."
  - "Noted again."
---

```yaml session-config
engine: local_shell
model: {provider: scripted}
```
"""

SERVED = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
```
"""


def test_chat_keeps_a_private_documents_mode(project):
    root = project({"sessions/q.md": SCRIPTED})
    path = root / "sessions" / "q.md"
    path.chmod(0o600)
    code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", process=True)
    assert code == 0, err
    assert "Noted." in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_chat_refuses_to_break_hard_links_before_asking(project):
    with ChatServer() as server:
        server.reply("Should not be asked.")
        root = project({"sessions/q.md": SERVED.format(base_url=server.base_url)})
        path = root / "sessions" / "q.md"
        other = root / "notes-copy.md"
        os.link(path, other)
        before = path.read_bytes()
        code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", process=True)
        assert server.requests == []  # refused before the model was asked
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith("domarkx: error: sessions/q.md: the document has 2 hard links"), err
    assert "symbolic links" in err
    assert path.read_bytes() == before and other.read_bytes() == before
    assert os.stat(path).st_ino == os.stat(other).st_ino  # still one file


def test_a_sigkilled_writer_leaves_no_temporary_file_after_the_next_chat(project):
    root = project({"sessions/q.md": SCRIPTED})
    path = root / "sessions" / "q.md"
    # A writer of the document killed between its temporary file and the rename: the
    # real writer, held before the rename, then SIGKILLed.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\n"
            "from domarkx.data import atomic\n"
            "os.replace = lambda *a: time.sleep(3600)\n"
            f"atomic.write_atomic({str(path)!r}, 'half')\n",
        ],
        env=process_env(),
    )
    try:
        assert wait_for(lambda: list(path.parent.glob(".q.md.*.tmp")), within=30)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    assert len(list(path.parent.glob(".q.md.*.tmp"))) == 1
    code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", process=True)
    assert code == 0, err
    assert list(path.parent.glob(".q.md.*.tmp")) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["q.md"]


def test_a_session_with_an_80_character_cjk_name_chats_and_builds(project):
    name = "会议记录" * 20  # 80 characters, 240 bytes
    root = project({f"sessions/{name}.md": SCRIPTED})
    code, _out, err = domarkx(root, "chat", f"sessions/{name}.md", "-m", "hi", process=True)
    assert code == 0, err
    assert "too long" not in err
    assert "Noted." in (root / "sessions" / f"{name}.md").read_text()
    built = domarkx(root, "build", process=True)
    assert built.code == 0, built.out + built.err
    assert "too long" not in built.out + built.err
    tags = domarkx(root, "snapshots", process=True)
    assert name in tags.out  # the tag reads back whole
    ran = domarkx(root, "run", name, process=True)
    assert ran.code == 0, ran.err


def test_a_session_with_an_84_character_cjk_name_builds_with_doit_and_chats(tmp_path: Path):
    name = "会议记录" * 21  # 84 characters, 252 bytes: `.json` would pass the 255 a name may have
    root = new_project(tmp_path / "p", {f"sessions/{name}.md": SCRIPTED, "sessions/q.md": SCRIPTED})
    built = doit(root, process=True)
    assert built.code == 0, built.out + built.err
    assert "too long" not in built.out + built.err
    assert {f"export:{name}", "export:q"} <= built.executed
    cache = root / ".domarkx" / "cache"
    assert (
        root / ".domarkx" / BUILD_CACHES / "parse" / "q.json"
    ).is_file()  # a short name's files keep their names
    assert all(len(p.name.encode()) <= 255 for p in cache.rglob("*"))
    assert doit(root, process=True).executed == set()  # up to date: its files are found again

    code, _out, err = domarkx(root, "chat", f"sessions/{name}.md", "-m", "hi", process=True)
    assert code == 0, err
    assert "Noted." in (root / "sessions" / f"{name}.md").read_text()
    again = doit(root, process=True)
    assert again.code == 0, again.out + again.err
    assert again.executed == {f"{stage}:{name}" for stage in STAGES}  # the edited one only
    assert "> Noted." in (root / ".domarkx" / "exports" / f"{name}.md").read_text()


def test_prune_keeps_the_instance_that_an_error_said_keeps_the_question(project):
    with ChatServer() as server:
        server.fail(500, "the GPU caught fire")
        root = project({"sessions/q.md": SERVED.format(base_url=server.base_url)})
        env = {"DOMARKX_LLM_RETRIES": "0"}
        code, _out, err = domarkx(
            root, "chat", "sessions/q.md", "-m", "my precious question", env=env, process=True
        )
    assert code == 1
    match = re.search(r"instance ([0-9a-f]{12}) keeps your question", err)
    assert match, err
    ident = match.group(1)
    pruned = domarkx(root, "prune", process=True)
    assert pruned.code == 0, pruned.err
    assert f"kept instance {ident}" in pruned.err
    exported = domarkx(root, "export", ident, process=True)
    assert exported.code == 0, exported.err
    assert "my precious question" in exported.out
    removed = domarkx(root, "rm", ident, process=True)
    assert removed.code == 0, removed.err
    assert domarkx(root, "export", ident, process=True).code == 1


def test_a_huge_retry_after_is_one_request_and_said_so(project):
    with ChatServer() as server:
        for _ in range(6):
            server.fail(429, "slow down", headers={"retry-after": "100000"})
        root = project({"sessions/q.md": SERVED.format(base_url=server.base_url)})
        code, _out, err = domarkx(
            root,
            "chat",
            "sessions/q.md",
            "-m",
            "hi",
            env={"DOMARKX_LLM_RETRIES": "4"},
            process=True,
        )
        requests = len(server.requests)
    assert code == 1, err
    tried = re.search(r"\(tried (\d+) times?\)", err)
    assert tried, err
    assert int(tried.group(1)) == requests, (err, requests)
    assert "Traceback" not in err


def test_migrate_keeps_the_mode_too(tmp_path: Path):
    root = tmp_path / "proj"
    (root / "sessions").mkdir(parents=True)
    path = root / "sessions" / "old.md"
    path.write_text("```yaml session-config\nengine: local_shell\n```\n\n## unknow\n\nr\n")
    path.chmod(0o640)
    code, _out, err = domarkx(root, "migrate", "sessions/old.md", process=True)
    assert code == 0, err
    assert "## tool" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
