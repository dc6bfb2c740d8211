"""``domarkx chat`` and ``domarkx fork``: the source document is the conversation.

The model is the loopback chat-completions server (tests/chat_server.py) reached
through the real ``openai`` client; the command runs as a user runs it. What a
user checks: the file keeps every byte it had (a diff shows only added lines),
the appended turn reads back as the conversation, and failures write nothing.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import threading
import time
from pathlib import Path

import pytest

from domarkx.cli.main import main
from domarkx.data.models import NOT_RUN
from domarkx.data.store import Store
from domarkx.session.snapshot import SnapshotManager
from tests.chat_server import ChatServer, Response

KEY = {"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM_RETRIES": "0"}

# Comments, a macro, an include, odd spacing and no final newline: chat keeps them all.
SESSION = """\
---
title: Counting
---

<!-- a comment the chat keeps -->
Asked by [@who](domarkx://set?value=Ana).

```yaml session-config
timeout: 10
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
  max_turns: 3
```

## system

> You are a careful shell assistant. [@rules](domarkx://include?path=_partials/rules.md)


## user

>   How many lines does `printf 'a\\nb\\n'` print?  """

RULES = "Answer in one sentence."


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in KEY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DOMARKX_LLM", raising=False)


def chat(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``domarkx ARGS`` in this process (no terminal: pytest's stdin is none)."""
    code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


def only_added(before: str, after: str) -> list[str]:
    """The lines a unified diff adds; fails if it removes or changes any."""
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm=""))
    removed = [d for d in diff[2:] if d.startswith("-")]
    assert removed == [], removed
    return [d[1:] for d in diff[2:] if d.startswith("+")]


def without_metadata(text: str) -> str:
    """``text`` without its ``msg-metadata`` blocks (provider, usage, replay key...)."""
    return re.sub(r"```json msg-metadata\n.*?\n```\n\n", "", text, flags=re.S)


def imported(root: Path, path: Path):
    return SnapshotManager(Store(root / ".domarkx", root)).import_file(path).snapshot


def grant(base_url: str) -> str:
    """The project's configuration: the test key may go to the loopback server."""
    return f'[endpoints.test]\nbase_url = "{base_url}"\napi_key_env = "DOMARKX_TEST_KEY"\n'


def make(project, server: ChatServer, text: str = SESSION) -> tuple[Path, Path, str]:
    source = text.format(base_url=server.base_url)
    root = project(
        {
            "domarkx.toml": grant(server.base_url),
            "sessions/q.md": source,
            "sessions/_partials/rules.md": RULES + "\n",
        }
    )
    return root, root / "sessions" / "q.md", source


def test_chat_appends_the_turn_and_keeps_every_byte(project, env, capsys):
    with ChatServer() as server:
        root, path, before = make(project, server)
        server.reply(
            "Let me count:\n\n```bash\nprintf 'a\\nb\\n' | wc -l\n```", "It prints 2 lines."
        )
        code, out, err = chat(capsys, "chat", "sessions/q.md", "--yes")

    assert code == 0, err
    after = path.read_text(encoding="utf-8")
    assert after.startswith(before)  # every byte that was there, as it was
    added = "\n".join(only_added(before, after))
    assert added.count("## assistant") == 2
    assert "```text output exit_code=0\n2\n```" in added
    assert "> It prints 2 lines." in added
    # The model was sent the document as imported (macros expanded); the file keeps the macros.
    first = server.requests[0]["messages"]
    assert RULES in first[0]["content"] and "domarkx://" in after
    # What was streamed is the reply, then the output; the note names the file.
    assert "Let me count:" in out and "It prints 2 lines." in out and "\n2\n" in out
    assert "appended 2 messages to sessions/q.md" in err

    # The file now imports to the conversation the model and the sandbox made.
    snapshot = imported(root, path)
    assert [m.role for m in snapshot.conversation] == ["system", "user", "assistant", "assistant"]
    store = Store(root / ".domarkx", root)
    assert store.tags()["q"] == snapshot.snapshot_id  # the session's tag follows the file


def test_m_appends_a_question_even_after_a_user_message_and_crlf_stays(project, env, capsys):
    with ChatServer() as server:
        source = SESSION.format(base_url=server.base_url).replace("\n", "\r\n")
        root = project(
            {"sessions/_partials/rules.md": RULES, "domarkx.toml": grant(server.base_url)}
        )
        path = root / "sessions" / "q.md"
        path.write_bytes(source.encode())
        server.reply("Two.")
        code, _, err = chat(capsys, "chat", "sessions/q.md", "-m", "And `seq 3`?\n\n## not a role")

    assert code == 0, err
    data = path.read_bytes()
    assert data.startswith(source.encode())
    tail = data[len(source.encode()) :].decode()
    assert "\n" not in tail.replace("\r\n", "")  # appended lines end as the file's do
    assert without_metadata(tail.replace("\r\n", "\n")).endswith(
        "## user\n\n> And `seq 3`?\n>\n> ## not a role\n\n## assistant\n\n> Two.\n"
    )
    questions = [m for m in server.requests[0]["messages"] if m["role"] == "user"]
    assert len(questions) == 2 and questions[-1]["content"].startswith("And `seq 3`?")
    roles = [m.role for m in imported(root, path).conversation]
    assert roles == ["system", "user", "user", "assistant"]


def test_nothing_to_answer_without_a_terminal_is_bad_usage(project, env, capsys):
    root = project(
        {
            "sessions/done.md": "```yaml session-config\nmodel: {provider: scripted}\n```\n\n"
            "## user\n\nHi\n\n## assistant\n\nHello.\n"
        }
    )
    before = (root / "sessions" / "done.md").read_bytes()
    code, _, err = chat(capsys, "chat", "sessions/done.md")
    assert code == 2
    assert "does not end with a user message" in err and "-m TEXT" in err
    assert (root / "sessions" / "done.md").read_bytes() == before
    assert chat(capsys, "chat", "sessions/done.md", "--regenerate", "-m", "x")[0] == 2


def test_unapproved_code_writes_nothing_then_yes_answers_from_the_replay(project, env, capsys):
    with ChatServer() as server:
        root, path, before = make(project, server)
        server.reply("```bash\necho counted\n```")
        code, _, err = chat(capsys, "chat", "sessions/q.md")
        assert code == 1
        assert path.read_text(encoding="utf-8") == before
        assert "nothing approves it" in err and "--yes" in err and "Traceback" not in err
        store = Store(root / ".domarkx", root)
        [instance_id] = store.instance_ids()
        assert f"instance {instance_id[:12]}" in err
        # The instance holds the reply: `domarkx export ID` shows it.
        assert chat(capsys, "export", instance_id[:12])[1].count("echo counted") == 1

        server.reply("It printed counted.")  # only the question after the output is new
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--yes")
        assert code == 0, err
    assert len(server.requests) == 2  # the first reply came from its replay record
    added = "\n".join(only_added(before, path.read_text(encoding="utf-8")))
    assert "```text output exit_code=0\ncounted\n```" in added
    assert "> It printed counted." in added


def test_no_model_server_is_one_line_with_the_model_line_and_the_file_untouched(
    project, env, capsys
):
    with ChatServer() as server:
        base_url = server.base_url  # its port is closed once the block ends
    before = SESSION.format(base_url=base_url)
    root = project(
        {
            "domarkx.toml": grant(base_url),
            "sessions/q.md": before,
            "sessions/_partials/rules.md": RULES + "\n",
        }
    )
    path = root / "sessions" / "q.md"
    model_line = before.splitlines().index("model:") + 1
    code, out, err = chat(capsys, "chat", "sessions/q.md")
    assert (code, out) == (1, "")
    first, hint = err.splitlines()
    assert first.startswith(f"domarkx: error: sessions/q.md:{model_line}: cannot reach the model")
    assert first.endswith("(nothing was written to sessions/q.md)")
    # Nothing came back, so there is no turn to point at in an instance.
    assert hint == "  hint: check `model.base_url` and your network"
    assert path.read_text(encoding="utf-8") == before
    # A question typed with -m is not lost: the error names the instance that keeps it.
    code, _, err = chat(capsys, "chat", "sessions/q.md", "-m", "A question typed with care")
    assert code == 1 and "keeps your question" in err
    ident = err.split("instance ", 1)[1].split()[0]
    assert "A question typed with care" in chat(capsys, "export", ident)[1]
    assert path.read_text(encoding="utf-8") == before


def test_a_file_changed_while_the_model_answered_is_left_alone(project, env, capsys):
    with ChatServer() as server:
        root, path, before = make(project, server)
        server.queue.append(Response(text="Slow answer.", delay=1.0))
        edited = before + "\n\nI changed my mind.\n"

        def edit_when_asked() -> None:
            deadline = time.monotonic() + 20
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            path.write_text(edited, encoding="utf-8")

        editor = threading.Thread(target=edit_when_asked)
        editor.start()
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--yes")
        editor.join(30)

    assert code == 1
    assert path.read_text(encoding="utf-8") == edited  # the user's edit, and nothing else
    store = Store(root / ".domarkx", root)
    [instance_id] = store.instance_ids()
    assert "changed on disk" in err and instance_id[:12] in err
    assert "> Slow answer." in chat(capsys, "export", instance_id[:12])[1]


def test_regenerate_replaces_the_answer_and_its_replay_record(project, env, capsys, monkeypatch):
    with ChatServer() as server:
        root, path, before = make(project, server)
        server.reply("First answer.")
        assert chat(capsys, "chat", "sessions/q.md")[0] == 0
        answered = path.read_text(encoding="utf-8")
        assert "> First answer." in answered

        server.reply("Second answer.")
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--regenerate")
        assert code == 0, err
        assert "domarkx: replaced the last answer in sessions/q.md with 1 message" in err

        monkeypatch.setenv("DOMARKX_LLM", "replay")
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--regenerate")
        assert code == 1 and "DOMARKX_LLM=replay" in err
    after = path.read_text(encoding="utf-8")
    assert after.startswith(before)  # every byte up to the end of the user message
    assert "First answer." not in after
    assert without_metadata(after).endswith("## assistant\n\n> Second answer.\n")
    assert server.requests[0]["messages"] == server.requests[1]["messages"]
    [record] = (root / ".domarkx" / "replay").rglob("*.json")
    reply = json.loads(record.read_text())["reply"]
    assert (reply["text"] if isinstance(reply, dict) else reply) == "Second answer."


def test_a_document_ending_in_an_open_block_is_not_answered(project, env, capsys):
    with ChatServer() as server:
        _, path, before = make(project, server, SESSION + "\n\n```bash norun\necho open")
        server.reply("Fine.")
        code, _, err = chat(capsys, "chat", "sessions/q.md")
        assert server.requests == []  # found before the model is asked
    assert code == 1
    assert "sessions/q.md: the document ends inside an open block" in err
    assert path.read_text(encoding="utf-8") == before


def test_a_refusal_is_written_and_the_model_is_told(project, env, capsys):
    """With ``approve`` never granted, a "no" is the block's result (a terminal's "no" too)."""
    from domarkx.session.approval import Approval, CodeRequest
    from domarkx.session.chat import ChatSession

    with ChatServer() as server:
        root, path, before = make(project, server)
        server.reply("```bash\nrm -rf ~/stuff\n```", "I will not, then.")
        asked: list[CodeRequest] = []

        def say_no(request: CodeRequest):
            asked.append(request)
            return "no"

        store = Store(root / ".domarkx", root)
        session = ChatSession(store, path, approval=Approval(mode="ask", ask=say_no))
        session.prepare()
        session.start()
        try:
            session.answer()
        finally:
            session.close()
    assert [r.code for r in asked] == ["rm -rf ~/stuff"]
    added = "\n".join(only_added(before, path.read_text(encoding="utf-8")))
    assert re.search(f"```text output code_sha256=[0-9a-f]{{16}}\n{NOT_RUN}\n```", added)
    assert NOT_RUN in server.requests[1]["messages"][-1]["content"]


# fork ------------------------------------------------------------------------------


def test_fork_keeps_the_first_messages_byte_for_byte(project, capsys):
    source = (
        "---\ntitle: A\n---\n\nPreamble [@x](domarkx://set?value=1).\n\n"
        "```yaml session-config\nengine: local_shell\n```\n\n"
        "## system\n\nBe brief.  \n\n\n## user\n\n> One?\n\n## assistant\n\n> Two.\n"
    )
    root = project({"sessions/a.md": source})
    code, out, err = chat(capsys, "fork", "sessions/a.md", "--messages", "2", "-o", "sessions/b.md")
    assert code == 0, err
    assert out.strip() == "sessions/b.md"
    forked = (root / "sessions" / "b.md").read_text()
    assert forked == source[: source.index("\n## assistant")]
    assert [m.role for m in imported(root, root / "sessions" / "b.md").conversation] == [
        "system",
        "user",
    ]

    code, _, err = chat(capsys, "fork", "sessions/a.md", "--messages", "0", "-o", "sessions/c.md")
    assert code == 0, err
    assert (root / "sessions" / "c.md").read_text() == source[: source.index("\n## system")]

    assert chat(capsys, "fork", "sessions/a.md", "-n", "4", "-o", "sessions/d.md")[0] == 2
    code, _, err = chat(capsys, "fork", "sessions/a.md", "-n", "1", "-o", "sessions/b.md")
    assert code == 1 and "already exists" in err
    assert not (root / "sessions" / "d.md").exists()


# The interactive chat, through a real pseudo-terminal --------------------------------

TALK = """\
```yaml session-config
timeout: 10
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
```

```bash setup-script
echo set-up >> {marker}
```

## system

> Keep state in the sandbox.
"""


def terminal_env() -> dict[str, str]:
    from tests.support import process_env

    # The pty answers no cursor-position request; prompt_toolkit's own switch skips them.
    return process_env({**KEY, "DOMARKX_LLM": None, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})


def test_an_interactive_chat_keeps_one_sandbox_and_appends_each_turn(project):
    import sys

    from tests.pseudo_terminal import PseudoTerminal

    with ChatServer() as server:
        root = project()
        marker = root / "setup-ran.txt"
        talk = TALK.format(base_url=server.base_url, marker=marker)
        project({"sessions/talk.md": talk, "domarkx.toml": grant(server.base_url)})
        path = root / "sessions" / "talk.md"
        before = path.read_text()
        server.queue.append(Response(text="Setting it.\n\n```python\nx = 41\n```", chunk_size=3))
        server.reply("Done.", "```python\nprint(x + 1)\n```", "It is 42.")
        argv = [sys.executable, "-m", "domarkx", "chat", "sessions/talk.md"]
        with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
            term.expect("Ctrl-D ends")
            term.expect("you>")
            term.send("Set x\x1b\rto 41, please.\r")  # Alt-Enter: a second line
            term.expect("x = 41")
            term.expect("run it? [y]es / [n]o / [a]lways: ")
            term.send("a\n")  # always: the next turn's code runs without asking
            term.expect("Done.")
            term.expect("appended 3 messages to sessions/talk.md")
            first_turn = path.read_text()
            term.expect("you>")
            term.send("Now print x + 1.\r")
            term.expect("It is 42.")
            term.expect("you>")
            term.send("\r")  # a stray Enter sends nothing and ends nothing
            term.expect("nothing sent; Ctrl-D ends the chat")
            term.expect("you>")
            term.send("\x04")  # Ctrl-D ends it
            assert term.wait() == 0
            shown = term.seen

    assert "Setting it." in shown and "42" in shown
    assert shown.count("run it?") == 1
    # Each turn was written as it ended; the second only added to the first.
    assert first_turn.startswith(before) and "> Done." in first_turn
    after = path.read_text()
    added = "\n".join(only_added(first_turn, after))
    assert "```text output exit_code=0\n42\n```" in added  # x survived between turns
    snapshot = imported(root, path)
    roles = [m.role for m in snapshot.conversation]
    assert roles == ["system", "user", "assistant", "assistant", "user", "assistant", "assistant"]
    assert snapshot.conversation[1].content[0].value == "Set x\nto 41, please."
    assert marker.read_text() == "set-up\n"  # the setup script ran once, for both turns
    store = Store(root / ".domarkx", root)
    [instance_id] = store.instance_ids()
    assert store.get_instance(instance_id).status == "exited"


def test_ctrl_c_drops_a_message_and_ctrl_d_ends_the_chat_writing_nothing(project):
    import sys

    from tests.pseudo_terminal import PseudoTerminal

    root = project()
    talk = TALK.format(base_url="http://127.0.0.1:9/v1", marker=root / "setup-ran.txt")
    project({"sessions/talk.md": talk})
    before = (root / "sessions" / "talk.md").read_bytes()
    argv = [sys.executable, "-m", "domarkx", "chat", "sessions/talk.md"]
    with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
        term.expect("you>")
        term.send("never mind")
        term.expect("never mind")
        term.send("\x03")  # Ctrl-C drops what was typed and asks again
        # The dropped line is drawn once more (greyed) before the new prompt: wait
        # for that one, or Ctrl-D may reach the terminal before the new prompt reads it.
        term.expect("you> never mind")
        term.expect("you>")
        term.send("\x04")
        assert term.wait() == 0
    assert (root / "sessions" / "talk.md").read_bytes() == before


def test_doit_after_a_chat_builds_the_new_state_offline(project, env, capsys):
    """The build after a chat gives the document's new state offline: the turn's code
    does not run again (the build starts from the layer the chat saved after it, spec
    layers-checks-scale 1), its output is the one of the chat, nothing asks the model."""
    from tests.support import DODO, doit

    with ChatServer() as server:
        root = project()
        marker = root / "ran.txt"
        root, _, _ = make(project, server)
        (root / "dodo.py").write_text(DODO)
        server.reply(f"```bash\necho run >> {marker}; wc -l < {marker}\n```", "Counted.")
        assert chat(capsys, "chat", "sessions/q.md", "--yes")[0] == 0
    assert marker.read_text() == "run\n"

    # The grant the chat had, should the build have to run the model's block.
    offline = {"DOMARKX_LLM": "replay", "DOMARKX_TEST_KEY": None, "DOMARKX_YES": "1"}
    built = doit(root, env=offline)
    assert built.code == 0, built.err
    assert marker.read_text() == "run\n"  # the appended block did not run again
    export = (root / ".domarkx" / "exports" / "q.md").read_text()
    assert "```text output exit_code=0\n1\n```" in export  # its output, from the chat
    assert export.count("## assistant") == 2 and "> Counted." in export
    assert len(server.requests) == 2  # both from the chat; the build asked nothing


def test_the_readme_chat_tour_runs_in_a_project_made_by_init(tmp_path, monkeypatch, capsys):
    """README's "Chat in the document" transcript, command by command, as printed there."""
    from tests.support import REPO_ROOT, doit

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    tour = readme.split("## Chat in the document\n", 1)[1].split("\n````console\n", 1)[1]
    tour = tour.split("\n````\n", 1)[0]
    steps = re.split(r"^\$ ", tour, flags=re.M)[1:]

    def command(step: str) -> tuple[list[str], str]:
        line, _, shown = step.partition("\n")
        return shlex.split(line.split("  #")[0]), shown

    monkeypatch.delenv("DOMARKX_HOME")
    monkeypatch.chdir(tmp_path)
    assert steps[0].startswith("domarkx init demo && cd demo")
    assert main(["init", "demo"]) == 0
    monkeypatch.chdir(tmp_path / "demo")
    capsys.readouterr()

    heredoc = steps[1].split("<<'EOF'\n", 1)[1]
    assert heredoc.endswith("\nEOF\n")
    Path("sessions/ask.md").write_text(heredoc[: -len("EOF\n")], encoding="utf-8")

    argv, shown = command(steps[2])
    assert argv[:2] == ["domarkx", "chat"]
    assert main(argv[1:]) == 0
    out, err = capsys.readouterr()
    assert out + err == shown

    argv, shown = command(steps[3])
    assert argv == ["grep", "^## ", "sessions/ask.md"]
    lines = Path("sessions/ask.md").read_text(encoding="utf-8").splitlines(keepends=True)
    assert "".join(line for line in lines if line.startswith("## ")) == shown

    argv, shown = command(steps[4])
    assert main(argv[1:]) == 0
    assert capsys.readouterr().out == shown

    argv, _ = command(steps[5])
    assert argv == ["DOMARKX_YES=1", "doit"]
    built = doit(tmp_path / "demo", env={"DOMARKX_YES": "1"})
    assert built.code == 0, built.err
    assert {"run:ask", "run:ask-again", "export:ask"} <= built.executed
    export = Path(".domarkx/exports/ask-again.md").read_text(encoding="utf-8")
    assert "> It is 42." in export  # the fork's question, answered in the build


def test_outputs_of_the_documents_own_blocks_are_not_written_again(project, env, capsys):
    """They run again (the model sees them), but only the new messages are appended."""
    earlier = (
        "\n\n## assistant\n\n```bash\necho earlier\n```\n\n```text output exit_code=0\nearlier\n```"
        "\n\n## user\n\nAnd this?\n\n```bash run\necho from-the-question\n```\n"
    )
    with ChatServer() as server:
        _, path, before = make(project, server, SESSION + earlier)
        server.reply("Both ran.")
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--yes")
        sent = server.requests[0]["messages"]
    assert code == 0, err
    after = path.read_text(encoding="utf-8")
    assert without_metadata(after) == before + "\n## assistant\n\n> Both ran.\n"
    assert "from-the-question" in sent[-1]["content"]  # the model saw the run block's output
    assert any("earlier" in m["content"] for m in sent if m["role"] == "user")


def test_a_failing_document_block_stops_before_the_model(project, env, capsys):
    with ChatServer() as server:
        _, path, before = make(project, server, SESSION + "\n\n```bash run\nexit 3\n```\n")
        code, _, err = chat(capsys, "chat", "sessions/q.md", "--yes")
        assert server.requests == []
    assert code == 1
    assert "failed with exit status 3" in err and "the model was not asked" in err
    assert path.read_text(encoding="utf-8") == before


@pytest.mark.docker
def test_in_docker_the_models_code_runs_without_asking(project, env, capsys):
    """The Docker engine isolates model-written code: no --yes, no terminal, no question."""
    from tests.dockerutil import BUSYBOX_IMAGE, require_image

    image = require_image(BUSYBOX_IMAGE)
    with ChatServer() as server:
        text = SESSION.replace("timeout: 10", f"timeout: 30\nengine: docker\nimage: {image}")
        _, path, before = make(project, server, text)
        server.reply("```bash\necho in-the-box; hostname | grep -c .\n```", "It ran.")
        code, _, err = chat(capsys, "chat", "sessions/q.md")
    assert code == 0, err
    added = "\n".join(only_added(before, path.read_text(encoding="utf-8")))
    assert "```text output exit_code=0\nin-the-box\n1\n```" in added and "> It ran." in added


def test_a_no_on_the_terminal_is_written_as_the_result_and_the_model_is_told(project):
    import sys

    from tests.pseudo_terminal import PseudoTerminal

    with ChatServer() as server:
        root = project()
        talk = TALK.format(base_url=server.base_url, marker=root / "setup-ran.txt")
        project({"sessions/talk.md": talk, "domarkx.toml": grant(server.base_url)})
        path = root / "sessions" / "talk.md"
        server.reply(f"```bash\ntouch {root / 'touched'}\n```", "Understood, I left it.")
        argv = [sys.executable, "-m", "domarkx", "chat", "sessions/talk.md", "-m", "Touch it."]
        with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
            term.expect("run it? [y]es / [n]o / [a]lways: ")
            term.send("maybe\n")  # not an answer: asked again
            term.expect("run it? [y]es / [n]o / [a]lways: ")
            term.send("n\n")
            term.expect("Understood, I left it.")
            assert term.wait() == 0
        told = server.requests[1]["messages"][-1]["content"]

    assert not (root / "touched").exists()
    assert NOT_RUN in told
    added = "\n".join(only_added(talk, path.read_text(encoding="utf-8")))
    assert f"{NOT_RUN}\n```" in added and "> Touch it." in added


def test_an_edit_between_two_turns_ends_the_chat_before_the_model_is_asked(project):
    import sys

    from tests.pseudo_terminal import PseudoTerminal

    with ChatServer() as server:
        root = project()
        talk = TALK.format(base_url=server.base_url, marker=root / "setup-ran.txt")
        project({"sessions/talk.md": talk, "domarkx.toml": grant(server.base_url)})
        path = root / "sessions" / "talk.md"
        server.reply("First.")
        argv = [sys.executable, "-m", "domarkx", "chat", "sessions/talk.md"]
        with PseudoTerminal(argv, env=terminal_env(), cwd=root) as term:
            term.expect("you>")
            term.send("One?\r")
            term.expect("appended 2 messages")
            term.expect("you>")
            edited = path.read_text() + "\nAn edit of my own.\n"
            path.write_text(edited)
            term.send("Two?\r")
            term.expect("changed on disk")
            assert term.wait() == 1
    assert len(server.requests) == 1
    assert path.read_text() == edited


TOOLS_SESSION = '''\
```yaml session-config
timeout: 20
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
tools: [add, bash]
```

```python setup-script
def add(a: int, b: int = 0) -> int:
    """Add two whole numbers."""
    return a + b
```

## user

> What is 2 + 3, and what does `echo hi` print?
'''


def test_tool_calls_and_their_results_are_appended_and_read_back(project, env, capsys):
    with ChatServer() as server:
        root = project(
            {
                "sessions/t.md": TOOLS_SESSION.format(base_url=server.base_url),
                "domarkx.toml": grant(server.base_url),
            }
        )
        path = root / "sessions" / "t.md"
        before = path.read_text()
        server.call(("add", {"a": 2, "b": 3}), ("bash", {"code": "echo hi"}), text="Both.")
        server.reply("5, and it prints hi.")
        code, out, err = chat(capsys, "chat", "sessions/t.md", "--yes")
        sent = server.requests[1]["messages"]
    assert code == 0, err
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "tool"]
    after = path.read_text()
    added = "\n".join(only_added(before, after))
    assert added.count("## tool") == 2 and '"tool_call_id": "call_1"' in added
    conversation = imported(root, path).conversation
    assert [m.role for m in conversation] == ["user", "assistant", "tool", "tool", "assistant"]
    assert conversation[1].message_metadata["tool_calls"][0]["name"] == "add"
    assert "5, and it prints hi." in out and "hi" in out


def test_a_linked_document_is_written_through_its_link_and_one_outside_is_refused(
    project, env, capsys, tmp_path
):
    with ChatServer() as server:
        root, path, before = make(project, server)
        (root / "sessions" / "link.md").symlink_to(path)
        outside = tmp_path / "outside.md"
        outside.write_text(before)
        (root / "sessions" / "away.md").symlink_to(outside)
        server.reply("Through the link.")
        assert chat(capsys, "chat", "sessions/link.md")[0] == 0
        code, _, err = chat(capsys, "chat", "sessions/away.md", "-m", "Hi")
        code_fork, _, _ = chat(capsys, "fork", "sessions/away.md", "-n", "1", "-o", "x.md")
    assert (root / "sessions" / "link.md").is_symlink()
    assert "> Through the link." in path.read_text()
    assert code == 1 and "outside the project" in err and outside.read_text() == before
    assert code_fork == 1 and not (root / "x.md").exists()
    assert len(server.requests) == 1


def test_export_and_chat_write_messages_with_one_writer(tmp_path):
    """Every example's export ends with exactly what chat would append for its messages."""
    from domarkx.session.export import render, render_messages
    from domarkx.session.names import session_files
    from tests.support import REPO_ROOT

    manager = SnapshotManager(Store(tmp_path / "store", REPO_ROOT))
    checked = 0
    for path in session_files(REPO_ROOT):
        snapshot = manager.import_file(path).snapshot
        if snapshot.conversation:
            assert render(snapshot).endswith("\n" + render_messages(snapshot.conversation))
            checked += 1
    assert checked >= 5


def test_a_macro_in_a_reply_is_written_so_that_it_stays_literal(project, env, capsys):
    """A ``domarkx://`` link in a reply must not expand when the document is next imported."""
    with ChatServer() as server:
        root, path, _ = make(project, server)
        server.reply("Try [@x](domarkx://set?value=surprise) in a session.")
        code, _, err = chat(capsys, "chat", "sessions/q.md")
    assert code == 0, err
    [reply] = imported(root, path).conversation[-1].content
    # Markdown that shows the link as written (escaped), not its expansion.
    assert reply.value.replace("\\[", "[") == "Try [@x](domarkx://set?value=surprise) in a session."


def test_a_typed_question_keeps_its_macro_link_as_typed(project, capsys):
    root = project(
        {
            "sessions/s.md": "---\nscripted_replies: [Noted.]\n---\n\n"
            "```yaml session-config\nmodel: {provider: scripted}\n```\n"
        }
    )
    code, _, err = chat(
        capsys, "chat", "sessions/s.md", "-m", "Is [@x](domarkx://set?value=1) kept?"
    )
    assert code == 0, err
    question = imported(root, root / "sessions" / "s.md").conversation[0]
    assert question.role == "user" and "domarkx://set?value=1" in question.content[0].value
