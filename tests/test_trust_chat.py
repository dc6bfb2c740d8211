"""What leaves the machine, what a terminal shows, and chat's first contact.

Real processes against a real loopback chat-completions server: a document
naming a server that is not listed sends nothing (a "remote" server is a name
under ``.invalid`` with ``HTTP_PROXY`` pointing at a loopback server that
records what reaches it); the approval prompt shows escape sequences instead
of obeying them (a real pseudo-terminal); a document's own project is used
from another folder; ``-m -``, ``--model``, ``--system``, a new document from
``[defaults]`` and ``--debug`` after the command.
"""

from __future__ import annotations

import subprocess
import sys

from tests.chat_server import ChatServer
from tests.support import domarkx, process_env

SESSION = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
```
"""


def test_a_document_cannot_send_its_conversation_to_an_unlisted_server(project):
    with ChatServer() as proxy:
        proxy.reply("leaked")
        root = project({"sessions/q.md": SESSION.format(base_url="http://models.invalid/v1")})
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "", "no_proxy": ""}
        env |= {"DOMARKX_LLM_RETRIES": "0", "http_proxy": env["HTTP_PROXY"]}
        code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "secret notes", env=env)
        assert proxy.requests == []  # nothing reached the proxy
    assert code == 1
    assert "sessions/q.md:4:" in err and "does not list" in err and "[endpoints.NAME]" in err
    assert "secret notes" not in (root / "sessions" / "q.md").read_text()


def test_the_approval_prompt_shows_escape_sequences_instead_of_obeying_them(project):
    from tests.pseudo_terminal import PseudoTerminal

    root = project(
        {
            "sessions/esc.md": """\
---
scripted_replies:
  - "Checking the disk:\\n```bash\\ntouch pwned; \\e[2K\\r\\e[1Adf -h /\\n```"
  - "Done."
---

```yaml session-config
engine: local_shell
model: {provider: scripted}
```
""",
        }
    )
    env = process_env({"DOMARKX_HOME": None, "TERM": "xterm", "DOMARKX_LLM": None})
    argv = [sys.executable, "-m", "domarkx", "chat", "sessions/esc.md", "-m", "Disk?"]
    with PseudoTerminal(argv, env=env, cwd=root) as term:
        term.expect("run it? [y]es / [n]o / [a]lways: ")
        shown = term.seen
        term.send("n\n")
        term.wait()
    assert "\x1b[2K" not in shown and "\x1b[1A" not in shown  # never passed to the terminal
    assert "touch pwned; \\x1b[2K\\r\\x1b[1Adf -h /" in shown  # shown as written
    assert not (root / "pwned").exists()


def test_a_command_given_a_document_uses_the_documents_project(tmp_path):
    with ChatServer() as server:
        server.reply("From the project.")
        proj = tmp_path / "proj"
        (proj / "sessions").mkdir(parents=True)
        (proj / "domarkx.toml").write_text(
            f'[endpoints.test]\nbase_url = "{server.base_url}"\napi_key_env = "DOMARKX_TEST_KEY"\n'
        )
        doc = SESSION.format(base_url=server.base_url).replace(
            "  base_url", "  api_key_env: DOMARKX_TEST_KEY\n  base_url"
        )
        (proj / "sessions" / "f.md").write_text(doc)
        env = {"DOMARKX_TEST_KEY": "sk-proj", "DOMARKX_LLM_RETRIES": "0"}
        code, _out, err = domarkx(tmp_path, "chat", "proj/sessions/f.md", "-m", "hi", env=env)
        assert code == 0, err
        assert [h.get("authorization") for h in server.headers] == ["Bearer sk-proj"]
    assert not (tmp_path / ".domarkx").exists()  # no store made in the current folder
    assert list((proj / ".domarkx" / "replay").rglob("*.json"))  # the record is the project's


def chat_process(root, *args, stdin=""):
    done = subprocess.run(
        [sys.executable, "-m", "domarkx", *args],
        cwd=root,
        env=process_env({"DOMARKX_HOME": None, "DOMARKX_LLM_RETRIES": "0"}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_m_dash_reads_standard_input_and_model_and_system_are_for_one_chat(project):
    with ChatServer() as server:
        server.reply("Reviewed.")
        root = project({"sessions/r.md": SESSION.format(base_url=server.base_url)})
        code, _out, err = chat_process(
            root,
            "chat",
            "sessions/r.md",
            "-m",
            "-",
            "--model",
            "other-model",
            "--system",
            "Be brief.",
            stdin="diff --git a/x b/x\n",
        )
        assert code == 0, err
        [request] = server.requests
    assert request["model"] == "other-model"
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "diff --git a/x b/x" in request["messages"][-1]["content"]
    text = (root / "sessions" / "r.md").read_text()
    assert "name: test-model" in text and "other-model" not in text.split("## user")[0]
    assert "Be brief." not in text and "diff --git a/x b/x" in text and "Reviewed." in text


def test_a_new_document_is_made_from_the_projects_defaults(project):
    with ChatServer() as server:
        server.reply("Hello!")
        root = project(
            {
                "domarkx.toml": f'[defaults.model]\nname = "test-model"\n'
                f'base_url = "{server.base_url}"\n'
            }
        )
        code, _out, err = chat_process(root, "chat", "sessions/new.md", "-m", "hi")
        assert code == 0, err
    text = (root / "sessions" / "new.md").read_text()
    assert text.startswith("```yaml session-config\nmodel:\n  name: test-model\n")
    assert "> hi" in text and "Hello!" in text
    # Without [defaults] it is one error, and no file is made.
    (root / "domarkx.toml").write_text("# nothing\n")
    code, _out, err = chat_process(root, "chat", "sessions/other.md", "-m", "hi")
    assert code == 2 and "[defaults]" in err and "Traceback" not in err
    assert not (root / "sessions" / "other.md").exists()


def test_debug_after_the_command_shows_the_traceback(project):
    root = project({"sessions/bad.md": "```yaml session-config\nengine: [\n```\n"})
    code, _out, err = chat_process(root, "chat", "sessions/bad.md", "-m", "hi", "--debug")
    assert code != 0 and "Traceback" in err
    code, _out, err = chat_process(root, "chat", "sessions/bad.md", "-m", "hi")
    assert code != 0 and "Traceback" not in err
