"""What a person at a terminal sees while domarkx waits: a real pseudo-terminal, real
processes, a real loopback chat-completions server.

- chat shows a spinner naming the model while it waits for the first token, and the
  reply's reasoning dimmed, then the reply;
- Ctrl-C while the model answers names the instance that keeps the question;
- a build's elapsed time leaves out the time it waited at an approval prompt.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

from tests.chat_server import ChatServer, Response
from tests.pseudo_terminal import PseudoTerminal
from tests.support import domarkx, process_env

SESSION = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
```
"""

DIM = "\x1b[2m"


def terminal_env() -> dict[str, str]:
    return process_env(
        {"DOMARKX_HOME": None, "TERM": "xterm", "DOMARKX_LLM": None, "DOMARKX_LLM_RETRIES": "0"}
    )


def chat_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "domarkx", "chat", *args]


def test_chat_shows_a_spinner_then_the_reasoning_dimmed_then_the_reply(project):
    with ChatServer() as server:
        server.queue.append(
            Response(text="The answer is 42.", reasoning="Let me think it over.", delay=1.5)
        )
        root = project({"sessions/q.md": SESSION.format(base_url=server.base_url)})
        argv = chat_argv("sessions/q.md", "-m", "What is it?")
        with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
            waiting = term.expect("waiting for test-model (Ctrl-C stops)")
            after = term.expect("The answer is 42.")
            assert term.wait() == 0, term.tail()
    assert re.search(r"\r[|/\\-] waiting for test-model \(Ctrl-C stops\)", waiting), waiting
    # The spinner is taken off the line before the reasoning, which is shown dimmed
    # (each piece as it arrives), then the reply in plain text.
    cleared = after.rindex("\r\x1b[K")
    thought, reply = after[cleared + 4 :].split("\r\n", 1)
    pieces = re.findall(r"\x1b\[2m(.*?)\x1b\[0m", thought)
    assert "".join(pieces) == "Let me think it over.", thought
    assert re.sub(r"\x1b\[2m.*?\x1b\[0m", "", thought) == ""  # nothing of it undimmed
    assert reply == "The answer is 42." and "waiting for" not in reply
    text = (root / "sessions" / "q.md").read_text()
    assert "The answer is 42." in text


def test_ctrl_c_while_the_model_answers_names_the_instance_that_keeps_the_question(project):
    with ChatServer() as server:
        server.queue.append(Response(text="Too late.", delay=60))
        root = project({"sessions/q.md": SESSION.format(base_url=server.base_url)})
        before = (root / "sessions" / "q.md").read_bytes()
        argv = chat_argv("sessions/q.md", "-m", "A question worth keeping")
        with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
            term.expect("waiting for test-model")
            term.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            said = term.expect("shows it)")
            code = term.wait()
    assert code == 130, said
    assert "Traceback" not in said
    match = re.search(r"instance ([0-9a-f]{12}) keeps the conversation with your question", said)
    assert match, said
    assert (root / "sessions" / "q.md").read_bytes() == before  # nothing written
    exported = domarkx(root, "export", match.group(1), process=True)
    assert exported.code == 0, exported.err
    assert "A question worth keeping" in exported.out


SCRIPTED = """\
---
scripted_replies:
  - "Look:\\n```bash\\necho approved-run\\n```"
  - "Done."
---

```yaml session-config
engine: local_shell
model: {provider: scripted}
```

## user

Go.
"""


def test_a_builds_elapsed_time_leaves_out_the_time_at_an_approval_prompt(project):
    root: Path = project({"sessions/q.md": SCRIPTED})
    argv = [sys.executable, "-m", "domarkx", "build"]
    started = time.monotonic()
    with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
        term.expect("run it? [y]es / [n]o / [a]lways: ", timeout=60)
        asked = time.monotonic()
        time.sleep(4)  # the user reads the code
        term.send("y\n")
        waited = time.monotonic() - asked
        summary = term.expect(" s)\r\n", timeout=60)
        assert term.wait() == 0, term.tail()
    wall = time.monotonic() - started
    match = re.search(r"domarkx: 5 run \(([0-9.]+) s\)", summary)
    assert match, summary
    # The build's own time is at most what the command took less what the user took.
    assert float(match.group(1)) < wall - waited, (match.group(1), wall, waited)
    assert "approved-run" in (root / ".domarkx" / "exports" / "q.md").read_text()
