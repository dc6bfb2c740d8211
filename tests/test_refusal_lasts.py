"""A "no" is recorded and lasts; code a model wrote keeps its provenance (spec 3).

A user refuses the model's code (with "n" at a real terminal, or by
``approve = "never"``); ``domarkx chat`` writes the reply with its "not run"
output into the document. Every later command that reads the document
(``doit``, ``domarkx build``, ``domarkx run``, another ``chat`` turn, ``chat
--regenerate``), under any grant, leaves that code unrun and tells the model
"not run", as the file says, until the user deletes that output or changes the
code. And the code of a reply read back from the document needs the same grant
as when the model first sent it. The model is the loopback chat-completions
server, every command a real process; the code leaves a file behind, so each
test sees whether it ran.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from domarkx.data.models import NOT_RUN, NOT_RUN_BY_CONFIG
from tests.chat_server import ChatServer
from tests.pseudo_terminal import PseudoTerminal
from tests.support import DODO, CliResult, doit, domarkx, process_env

SESSION = """\
```yaml session-config
timeout: 20
model:
  name: test-model
  base_url: {base_url}
  max_turns: 3
```

## user

> Leave a file behind.
"""

# A grant given every way there is: the command line's and the configuration's.
EVERY_GRANT: Mapping[str, str | None] = {"DOMARKX_YES": "1", "DOMARKX_LLM": "replay"}
AUTO = 'approve = "auto"\n'


def touch(marker: Path) -> str:
    """The model's reply: code that leaves ``marker`` and prints a secret of the host."""
    return f"I will make it.\n\n```bash\ntouch {marker} && echo host-$((6 * 7))\n```"


def make(project, server: ChatServer, config: str = "") -> tuple[Path, Path]:
    root = project(
        {
            "sessions/q.md": SESSION.format(base_url=server.base_url),
            "dodo.py": DODO,
            "domarkx.toml": config,
        }
    )
    return root, root / "sessions" / "q.md"


def chat(root: Path, *args: str, env: Mapping[str, str | None] | None = None) -> CliResult:
    return domarkx(root, "chat", "sessions/q.md", *args, env=env, process=True)


def run(root: Path, *args: str, env: Mapping[str, str | None] | None = None) -> CliResult:
    """``domarkx import sessions/q.md``, then ``domarkx run ARGS q``."""
    imported = domarkx(root, "import", "sessions/q.md", env=env, process=True)
    assert imported.code == 0, imported.err
    return domarkx(root, "run", *args, "q", env=env, process=True)


def say_no_at_the_terminal(root: Path) -> str:
    """``domarkx chat sessions/q.md`` on a pty, answering "n"; what the terminal showed."""
    argv = [sys.executable, "-m", "domarkx", "chat", "sessions/q.md"]
    env = process_env({"DOMARKX_HOME": None, "DOMARKX_YES": None, "TERM": "xterm"})
    with PseudoTerminal(argv, env=env, cwd=root) as term:
        term.expect("run it? [y]es / [n]o / [a]lways: ")
        term.send("n\n")
        term.expect("appended 2 messages")
        assert term.wait() == 0
        return term.seen


def export(root: Path) -> str:
    return (root / ".domarkx" / "exports" / "q.md").read_text(encoding="utf-8")


def said_to_model(server: ChatServer, request: int = -1) -> str:
    return "\n".join(str(m.get("content")) for m in server.requests[request]["messages"])


def test_a_no_at_the_terminal_lasts_through_doit_build_run_and_the_next_chat(project, tmp_path):
    marker = tmp_path / "made-by-the-model"
    with ChatServer() as server:
        root, path = make(project, server)
        server.reply(touch(marker), "Understood, I left it.")
        shown = say_no_at_the_terminal(root)
        assert f"touch {marker}" in shown and not marker.exists()
        document = path.read_text(encoding="utf-8")
        assert re.search(f"```text output code_sha256=[0-9a-f]{{16}}\n{NOT_RUN}\n```", document)

        # Every build, under every grant: the code stays unrun, the export says so.
        (root / "domarkx.toml").write_text(AUTO)
        built = doit(root, env=EVERY_GRANT, process=True)
        assert built.code == 0, built.out + built.err
        assert not marker.exists()
        assert NOT_RUN in export(root) and "host-42" not in export(root)
        built = domarkx(root, "build", "--yes", "--always-execute", env=EVERY_GRANT, process=True)
        assert built.code == 0, built.out + built.err
        assert not marker.exists()

        # domarkx run with --yes.
        ran = run(root, "--yes", env=EVERY_GRANT)
        assert ran.code == 0, ran.err
        assert not marker.exists()
        shown = domarkx(root, "export", ran.out.strip().splitlines()[-1], process=True).out
        assert NOT_RUN in shown and "host-42" not in shown

        # The next chat turn, with --yes: the model reads "not run", as the file says.
        server.reply("Still nothing to do.")
        turn = chat(root, "-m", "And now?", "--yes")
        assert turn.code == 0, turn.err
        assert not marker.exists()
        told = said_to_model(server)
        assert NOT_RUN in told and "host-42" not in told
        assert path.read_text(encoding="utf-8").startswith(document)


def test_approve_never_says_it_is_the_configuration_and_lasts_past_a_later_grant(project, tmp_path):
    marker = tmp_path / "made-by-the-model"
    with ChatServer() as server:
        root, path = make(project, server, 'approve = "never"\n')
        server.reply(touch(marker), "Fine.")
        done = chat(root)
        assert done.code == 0, done.err
        assert not marker.exists()
        document = path.read_text(encoding="utf-8")
        assert NOT_RUN_BY_CONFIG in document and NOT_RUN not in document
        assert NOT_RUN_BY_CONFIG in said_to_model(server)

        (root / "domarkx.toml").write_text(AUTO)  # the user changes their mind
        built = doit(root, env=EVERY_GRANT, process=True)
        assert built.code == 0, built.out + built.err
        assert not marker.exists()
        assert NOT_RUN_BY_CONFIG in export(root)


def test_deleting_the_not_run_output_or_changing_the_code_lifts_the_refusal(project, tmp_path):
    marker = tmp_path / "made-by-the-model"
    with ChatServer() as server:
        root, path = make(project, server, 'approve = "never"\n')
        server.reply(touch(marker), "Fine.")
        assert chat(root).code == 0
    document = path.read_text(encoding="utf-8")
    (root / "domarkx.toml").write_text(AUTO)

    # The user edits the code: the new code is not the code refused, and runs (granted).
    other = tmp_path / "edited-by-the-user"
    path.write_text(document.replace(f"touch {marker}", f"touch {other}"), encoding="utf-8")
    built = doit(root, env=EVERY_GRANT, process=True)
    assert built.code == 0, built.out + built.err
    assert other.exists() and not marker.exists()
    assert NOT_RUN_BY_CONFIG not in export(root) and "host-42" in export(root)

    # The user deletes the "not run" output: the code runs (granted).
    output = re.search(r"```text output code_sha256=\w+\n.*?\n```\n\n", document, re.S)
    assert output is not None
    path.write_text(document.replace(output.group(0), ""), encoding="utf-8")
    built = doit(root, env=EVERY_GRANT, process=True)
    assert built.code == 0, built.out + built.err
    assert marker.exists()


def test_regenerate_keeps_an_earlier_refusal(project, tmp_path):
    marker = tmp_path / "made-by-the-model"
    with ChatServer() as server:
        root, path = make(project, server, 'approve = "never"\n')
        server.reply(touch(marker), "Fine.")
        assert chat(root).code == 0
        server.reply("First answer.")
        assert chat(root, "-m", "Anything else?").code == 0
        (root / "domarkx.toml").write_text(AUTO)

        server.reply("A second answer.")
        again = chat(root, "--regenerate", "--yes", env={"DOMARKX_LLM": None})
        assert again.code == 0, again.err
        assert not marker.exists()
        told = said_to_model(server)
        assert NOT_RUN_BY_CONFIG in told and "host-42" not in told
        text = path.read_text(encoding="utf-8")
        assert "> A second answer." in text and "First answer." not in text
        assert NOT_RUN_BY_CONFIG in text


def test_code_a_model_wrote_needs_the_same_grant_when_read_back(project, tmp_path, monkeypatch):
    """Approved once in the chat, the model's block asks again in a build: same rule.

    Runs from scratch (no turn layers), so that every command runs the block again.
    """
    monkeypatch.setenv("DOMARKX_LAYERS", "0")
    marker = tmp_path / "runs.txt"
    with ChatServer() as server:
        root, path = make(project, server)
        server.reply(f"```bash\necho run >> {marker}\n```", "Done.")
        assert chat(root, "--yes").code == 0
    assert marker.read_text() == "run\n"
    line = path.read_text(encoding="utf-8").splitlines().index("```bash") + 1

    # No terminal, no grant: the build stops before the code, and shows it.
    built = doit(root, env={"DOMARKX_LLM": "replay", "DOMARKX_YES": None}, process=True)
    assert built.code != 0
    said = built.out + built.err
    assert f"sessions/q.md:{line}: message 2 (assistant), code block 1" in said
    assert "nothing approves it" in said and f"  | echo run >> {marker}" in said
    assert "Traceback" not in said
    assert marker.read_text() == "run\n"

    # On a terminal, a "no": not run; the export says so.
    assert domarkx(root, "import", "sessions/q.md", process=True).code == 0
    ran_argv = [sys.executable, "-m", "domarkx", "run", "q"]
    env = process_env({"DOMARKX_HOME": None, "DOMARKX_YES": None, "DOMARKX_LLM": "replay"})
    with PseudoTerminal(ran_argv, env=env, cwd=root) as term:
        term.expect(f"echo run >> {marker}")
        term.expect("run it? [y]es / [n]o / [a]lways: ")
        term.send("n\n")
        assert term.wait() == 0
    assert marker.read_text() == "run\n"

    # With a grant, it runs.
    built = doit(root, env=EVERY_GRANT, process=True)
    assert built.code == 0, built.out + built.err
    assert marker.read_text() == "run\nrun\n"

    # The same code written by hand (no msg-metadata of a model) is the document's own.
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"```json msg-metadata\n.*?\n```\n\n", "", text, flags=re.S))
    built = doit(root, env={"DOMARKX_LLM": "replay", "DOMARKX_YES": None}, process=True)
    assert built.code == 0, built.out + built.err
    assert marker.read_text() == "run\nrun\nrun\n"


PENDING_CALL = """\
```yaml session-config
tools: [bash]
model:
  name: test-model
  base_url: {base_url}
```

## user

> Leave a file behind.

## assistant

```json msg-metadata
{{"tool_calls": [{{"id": "call_1", "name": "bash", "arguments": {arguments}}}]}}
```
"""

AS_BLOCK = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
```

## user

> Leave a file behind.

## assistant

```json msg-metadata
{{"provider": "openai", "model": "test-model", "finish_reason": "stop"}}
```

```bash
{code}
```

## user

> Thanks.
"""


@pytest.mark.parametrize("form", ["tool call", "assistant block"])
def test_a_pending_bash_call_and_the_same_code_as_a_block_get_the_same_rule(
    project, tmp_path, form
):
    marker = tmp_path / "made-by-the-model"
    code = f"touch {marker}"
    with ChatServer() as server:
        if form == "tool call":
            text = PENDING_CALL.format(
                base_url=server.base_url, arguments=json.dumps(json.dumps({"code": code}))
            )
        else:
            text = AS_BLOCK.format(base_url=server.base_url, code=code)
        root = project({"sessions/q.md": text})
        server.default = None
        server.reply("Done.", "Done.")

        stopped = run(root, env={"DOMARKX_YES": None})
        assert stopped.code == 1
        assert "nothing approves it" in stopped.err and f"  | {code}" in stopped.err
        assert not marker.exists()

        (root / "domarkx.toml").write_text('approve = "never"\n')
        refused = run(root)
        assert refused.code == 0, refused.err
        assert not marker.exists()
        assert NOT_RUN_BY_CONFIG in said_to_model(server)
