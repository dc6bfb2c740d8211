"""A sandbox check in an interactive chat leaves no trace in any layer.

An interactive ``domarkx chat`` keeps one sandbox for all its turns, and runs
the ``sh``/``python`` checks of the message it answered in it. What such a
check does (a file it writes) stays in that sandbox, but no layer key says it
ran; so the turns after it in that chat save no layer, and a later chat resumes
from a layer saved before the check. Its sandbox then holds exactly what a run
from scratch gives.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from domarkx.data.store import Store
from domarkx.session.approval import Approval
from domarkx.session.chat import ChatSession
from tests.chat_server import ChatServer
from tests.support import domarkx, new_project

DOCUMENT = """\
```yaml session-config
engine: local_shell
timeout: 30
model:
  name: test-model
  base_url: {base_url}
  max_turns: 4
```

## user

> Turn 1.

```yaml expect
- sh: echo checked > checked.txt
```
"""

PROBE = "```bash\nls checked.txt 2>&1 || echo none\n```"


def last_output(document: Path) -> str:
    outputs = re.findall(r"```text output[^\n]*\n(.*?)```", document.read_text(), re.S)
    return outputs[-1]


def test_a_sandbox_check_in_an_interactive_chat_is_in_no_layer(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = new_project(
            tmp_path / "p",
            {
                "domarkx.toml": 'approve = "auto"\n',
                "sessions/q.md": DOCUMENT.format(base_url=server.base_url),
            },
        )
        path = root / "sessions" / "q.md"
        server.reply("```bash\necho one\n```", "1", "```bash\necho two\n```", "2")
        chat = ChatSession(Store(root / ".domarkx", root), path, approval=Approval(mode="auto"))
        chat.prepare()
        chat.start()
        try:
            chat.answer()  # turn 1, then its check writes checked.txt in this sandbox
            assert "passed" in path.read_text()  # the check ran and was recorded
            chat.ask("Turn 2.")
        finally:
            chat.close()

        scratch = tmp_path / "scratch"
        shutil.copytree(root, scratch, ignore=shutil.ignore_patterns(".domarkx"))

        # A later chat in its own process resumes from a layer; from scratch, no layer.
        server.reply(PROBE, "3")
        done = domarkx(root, "chat", "sessions/q.md", "-m", "Turn 3.", "--yes", process=True)
        assert done.code == 0, done.err
        server.reply(PROBE, "3")
        done = domarkx(
            scratch,
            "chat",
            "sessions/q.md",
            "-m",
            "Turn 3.",
            "--yes",
            process=True,
            env={"DOMARKX_LAYERS": "0"},
        )
        assert done.code == 0, done.err

    assert last_output(root / "sessions" / "q.md") == last_output(scratch / "sessions" / "q.md")
