"""`domarkx chat -m` across processes: turn N runs only the new reply's code.

Each turn is its own ``domarkx chat -m`` process; the model is the loopback
chat-completions server. The reply of each turn runs code that appends a
line (with a nanosecond stamp) to a side-effect log, so the log shows what ran
at every turn: with turn layers, each turn's code runs once, in the turn that
added it, and the state of the earlier turns (a variable, a file, a Python
global) comes back from the layer the previous turn saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.chat_server import ChatServer
from tests.dockerutil import PYTHON_IMAGE, require_image
from tests.layer_support import ran
from tests.support import domarkx, new_project

SESSION = """\
```yaml session-config
{engine}
tools: [bash]
timeout: 30
model:
  name: test-model
  base_url: {base_url}
  max_turns: 4
```

## user

> Start.

## assistant

> Started.
"""


def chat(root: Path, text: str, env: Mapping[str, str | None] | None = None) -> None:
    done = domarkx(root, "chat", "sessions/q.md", "-m", text, "--yes", process=True, env=env)
    assert done.code == 0, done.out + done.err


def said_to_model(server: ChatServer) -> str:
    return "\n".join(str(m.get("content")) for m in server.requests[-1]["messages"])


def test_each_chat_turn_runs_only_its_own_reply_local_shell(project, tmp_path):
    log = tmp_path / "side-effects.log"

    def logged(n: int, body: str) -> str:
        return f'echo "t{n} $(date +%s%N)" >> {log}\n{body}'

    with ChatServer() as server:
        root = new_project(
            tmp_path / "p",
            {
                "sessions/q.md": SESSION.format(
                    engine="engine: local_shell", base_url=server.base_url
                )
            },
        )
        server.reply(f"```bash\n{logged(1, 'export NAME=layers; echo one > one.txt')}\n```", "1")
        chat(root, "Turn 1.")
        server.reply(f"```python\ncount = 41\n```\n\n```bash\n{logged(2, 'cd .')}\n```", "2")
        chat(root, "Turn 2.")
        # Turn 3's code comes as a bash tool call: its state is in the layer too.
        code = logged(3, "mkdir -p sub && echo three > sub/three.txt")
        server.call(("bash", {"code": code})).reply("3")
        chat(root, "Turn 3.")
        body = 'echo "$NAME $(cat one.txt sub/three.txt | tr "\\n" " ")"'
        server.reply(f"```bash\n{logged(4, body)}\n```\n\n```python\nprint(count + 1)\n```", "4")
        chat(root, "Turn 4.")
        told = said_to_model(server)

    assert ran(log) == ["t1", "t2", "t3", "t4"]  # each turn's code ran once, in its turn
    assert "layers one three" in told and "42" in told
    text = (root / "sessions" / "q.md").read_text()
    assert text.count("## user") == 5 and "layers one three" in text

    # Layers off: the same fifth turn runs the whole history again.
    server_env = {"DOMARKX_LAYERS": "0"}
    with ChatServer() as server:
        text = text.replace(text.split("base_url: ")[1].split("\n")[0], server.base_url)
        (root / "sessions" / "q.md").write_text(text)
        server.reply("5")
        chat(root, "Turn 5.", env=server_env)
    assert ran(log) == ["t1", "t2", "t3", "t4", "t1", "t2", "t4"]  # tool calls are history


@pytest.mark.docker
def test_each_chat_turn_runs_only_its_own_reply_docker(project, tmp_path):
    require_image(PYTHON_IMAGE)

    # The sandbox cannot write outside itself: each turn's code adds a line with a
    # nanosecond stamp to /runs and shows the file. A turn that ran again in a later
    # turn would show another stamp for it there.
    def logged(n: int, body: str) -> str:
        return f'echo "t{n} $(date +%s%N)" >> /runs; grep "^t" /runs\n{body}'

    def stamps(document: Path) -> list[str]:
        """The /runs lines the last turn showed."""
        outputs = re.findall(r"```text output[^\n]*\n(.*?)```", document.read_text(), re.S)
        return (
            [line for line in outputs[-1].splitlines() if re.fullmatch(r"t\d \d+", line)]
            if outputs
            else []
        )

    with ChatServer() as server:
        engine = f"engine: docker\nimage: {PYTHON_IMAGE}"
        root = new_project(
            tmp_path / "p",
            {"sessions/q.md": SESSION.format(engine=engine, base_url=server.base_url)},
        )
        path = root / "sessions" / "q.md"
        server.reply(f"```bash\n{logged(1, 'export NAME=docker; cd /tmp; echo one > f')}\n```", "1")
        chat(root, "Turn 1.")
        after_1 = stamps(path)
        second = f"```python\nseen = 7\n```\n\n```bash\n{logged(2, ':')}\n```"
        server.reply(second, "2")
        chat(root, "Turn 2.")
        after_2 = stamps(path)
        body = 'echo "$NAME $(cat f)"'
        server.reply(f"```python\nprint(seen * 6)\n```\n\n```bash\n{logged(3, body)}\n```", "3")
        chat(root, "Turn 3.")
        after_3 = stamps(path)
        told = said_to_model(server)

    # Turn 1's line is the one turn 1 wrote, turn 2's the one turn 2 wrote: neither ran again.
    assert len(after_1) == 1 and after_2[:1] == after_1 and len(after_2) == 2
    assert after_3[:2] == after_2 and len(after_3) == 3
    assert "docker one" in told and "42" in told
    listing = domarkx(root, "layers", "sessions/q.md", process=True)
    assert listing.code == 0, listing.err
    rows = listing.out.splitlines()[1:]
    assert len(rows) == 3 and all(row.endswith("yes") for row in rows)
