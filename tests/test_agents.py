"""Sessions that talk to sessions: create_session, send_message and the rest, end to end.

The model of every session is the loopback chat-completions server
(tests/chat_server.py) reached through the real ``openai`` client; it scripts the
manager's tool calls and the worker's answers, in the order the requests come.
``domarkx chat`` runs as a user runs it; the documents on disk are what is checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.chat_server import ChatServer
from tests.support import doit, domarkx, new_project

ENV = {"DOMARKX_LLM": None, "DOMARKX_LLM_RETRIES": "0", "DOMARKX_TRUST": "1"}


def config(base_url: str, tools: list[str]) -> str:
    return (
        "```yaml session-config\nengine: local_shell\ntimeout: 20\n"
        f"model: {{provider: openai, name: test-model, base_url: {base_url}, max_turns: 6}}\n"
        f"tools: {json.dumps(tools)}\n```\n"
    )


AGENT_TOOLS = ["create_session", "send_message", "get_messages", "list_sessions"]


def project(tmp_path: Path, base_url: str, agents: str = "") -> Path:
    manager = (
        "---\ntitle: Manager\n---\n\n"
        + config(base_url, AGENT_TOOLS)
        + "\n## system\n\n> You delegate work to worker sessions.\n"
    )
    worker = (
        "---\ntitle: Worker\n---\n\n"
        + config(base_url, ["send_message", "attempt_completion"])
        + "\n## system\n\n> You are [@role](domarkx://role). Finish with attempt_completion.\n"
    )
    return new_project(
        tmp_path,
        {
            "domarkx.toml": 'approve = "auto"\n' + agents,
            "sessions": {"manager.md": manager, "templates": {"Worker.md": worker}},
        },
    )


def worker(root: Path, name: str) -> None:
    """sessions/NAME.md: the Worker template with its parameter given in the front matter."""
    template = (root / "sessions" / "templates" / "Worker.md").read_text(encoding="utf-8")
    text = template.replace("title: Worker\n", "title: Worker\nparams: {role: a helper}\n")
    (root / "sessions" / f"{name}.md").write_text(text, encoding="utf-8")


def tool_messages(text: str) -> list[str]:
    return [part.split("\n", 1)[1] for part in text.split("## tool")[1:]]


def test_a_manager_creates_a_worker_from_a_template_and_sends_it_a_task(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = project(tmp_path, server.base_url)
        server.call(
            (
                "create_session",
                {
                    "template_name": "Worker",
                    "session_name": "team/w1",
                    "parameters": {"role": "a poet"},
                },
            )
        )
        server.call(("send_message", {"session_name": "team/w1", "message": "Write one line."}))
        # The worker's answer (a nested chat): it finishes with attempt_completion.
        server.call(("attempt_completion", {"result": "Roses are red."}))
        server.call(("list_sessions", {}), ("get_messages", {"session_name": "team/w1"}))
        server.reply("The worker wrote: Roses are red.")
        done = domarkx(root, "chat", "sessions/manager.md", "-m", "Get me a poem.", env=ENV)
        assert done.code == 0, done.err

        worker = (root / "sessions" / "team" / "w1.md").read_text(encoding="utf-8")
        # Made from the template, the parameter a macro param of its front matter.
        assert "params:\n  role: a poet\n" in worker
        assert "You are [@role](domarkx://role)" in worker
        # The message the manager sent, and the worker's final answer, are in its document.
        assert "## user\n\n> Write one line." in worker
        assert "Roses are red." in worker.split("## user", 1)[1]
        # The worker's model saw the parameter's value, expanded.
        worker_request = server.requests[2]["messages"]
        assert any("You are a poet." in str(m.get("content")) for m in worker_request)

        manager = (root / "sessions" / "manager.md").read_text(encoding="utf-8")
        results = tool_messages(manager)
        assert "created session `team/w1` from template `Worker`" in results[0]
        assert "Roses are red." in results[1]  # send_message's result is the reply
        assert "manager\nteam/w1" in results[2].replace("> ", "")  # list_sessions
        # get_messages returns a whole rendered session (headings, fences): the document
        # holds it and reads back the same (a later chat turn imports it).
        assert "## user" in results[3].replace("> ", "") or "Write one line." in results[3]
        assert manager.rstrip().endswith("> The worker wrote: Roses are red.")
        again = domarkx(root, "import", "sessions/manager.md", env=ENV)
        assert again.code == 0, again.err


def test_max_depth_stops_a_chain_of_messages_with_a_clear_error(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = project(tmp_path, server.base_url, "[agents]\nmax_depth = 1\n")
        worker(root, "w1")
        worker(root, "w2")
        server.call(("send_message", {"session_name": "w1", "message": "Ask w2."}))
        server.call(("send_message", {"session_name": "w2", "message": "Hello?"}))  # by w1
        server.call(("attempt_completion", {"result": "w2 could not be asked."}))  # w1
        server.reply("Done.")  # the manager
        done = domarkx(root, "chat", "sessions/manager.md", "-m", "Go.", env=ENV)
        assert done.code == 0, done.err
        w1 = (root / "sessions" / "w1.md").read_text(encoding="utf-8")
        assert "[agents] max_depth = 1 reached: manager -> w1 -> w2" in w1
        assert '"is_error": true' in w1
        # w2 was never written to: the message was refused before reaching it.
        assert "Hello?" not in (root / "sessions" / "w2.md").read_text(encoding="utf-8")


def test_max_messages_stops_a_loop_of_messages(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = project(tmp_path, server.base_url, "[agents]\nmax_messages = 2\n")
        worker(root, "w1")
        for n in range(3):
            server.call(("send_message", {"session_name": "w1", "message": f"Task {n}"}))
            if n < 2:
                server.call(("attempt_completion", {"result": f"done {n}"}))
        server.reply("Stopped.")
        done = domarkx(root, "chat", "sessions/manager.md", "-m", "Loop.", env=ENV)
        assert done.code == 0, done.err
        manager = (root / "sessions" / "manager.md").read_text(encoding="utf-8")
        assert "[agents] max_messages = 2 reached" in tool_messages(manager)[2]
        assert "Task 2" not in (root / "sessions" / "w1.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "name",
    ["../outside", "/etc/passwd", "link/secret", "templates/../../x"],
)
def test_session_tools_act_only_inside_sessions(tmp_path: Path, name: str) -> None:
    with ChatServer() as server:
        root = project(tmp_path, server.base_url)
        (tmp_path / "outside.md").write_text("## user\n\n> private\n", encoding="utf-8")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "secret.md").write_text("## user\n\n> secret\n", encoding="utf-8")
        (root / "sessions" / "link").symlink_to(elsewhere)
        server.call(("get_messages", {"session_name": name}))
        server.reply("Refused.")
        done = domarkx(root, "chat", "sessions/manager.md", "-m", "Read it.", env=ENV)
        assert done.code == 0, done.err
        result = tool_messages((root / "sessions" / "manager.md").read_text(encoding="utf-8"))[0]
        assert '"is_error": true' in result
        assert "private" not in result and "secret\n" not in result


def test_a_build_runs_the_session_tools_in_a_workspace_of_its_own(tmp_path: Path) -> None:
    """``doit``: the worker is created and answered under .domarkx/agents/manager/, nothing
    is written in sessions/, templates are not built, and a rebuild writes the same."""
    with ChatServer() as server:
        root = project(tmp_path, server.base_url)
        manager = root / "sessions" / "manager.md"
        manager.write_text(
            manager.read_text(encoding="utf-8") + "\n## user\n\n> Get the greeting written.\n"
        )
        before = sorted(p.relative_to(root) for p in (root / "sessions").rglob("*"))

        def script() -> None:
            server.call(
                (
                    "create_session",
                    {
                        "template_name": "Worker",
                        "session_name": "w1",
                        "parameters": {"role": "a writer"},
                    },
                )
            )
            server.call(("send_message", {"session_name": "w1", "message": "Write hello."}))
            server.call(("attempt_completion", {"result": "hello"}))  # the worker
            server.reply("The worker wrote: hello")

        script()
        env = {**ENV, "DOMARKX_LLM": "record"}
        done = doit(root, env=env)
        assert done.code == 0, done.err
        assert sorted(p.relative_to(root) for p in (root / "sessions").rglob("*")) == before
        workspace = root / ".domarkx" / "agents" / "manager"
        written = (workspace / "w1.md").read_text(encoding="utf-8")
        assert "params:\n  role: a writer" in written and "> Write hello." in written
        exports = root / ".domarkx" / "exports"
        assert sorted(p.name for p in exports.rglob("*.md")) == ["manager.md"]  # no template
        export = (exports / "manager.md").read_text(encoding="utf-8")
        assert "\n> hello\n" in tool_messages(export)[1]
        # Built again from nothing but the replay records: the same documents, offline.
        (workspace / "w1.md").write_text("stale", encoding="utf-8")
        shutil.rmtree(root / ".domarkx" / "cache")
        (root / ".domarkx" / "doit.json").unlink(missing_ok=True)
        again = doit(root, env={**ENV, "DOMARKX_LLM": "replay"})
        assert again.code == 0, again.err
        assert (exports / "manager.md").read_text(encoding="utf-8") == export
        assert (workspace / "w1.md").read_text(encoding="utf-8") == written
        assert len(server.requests) == 4  # the rebuild asked no model


def test_init_templates_are_agents_that_work_together(tmp_path: Path) -> None:
    """``domarkx init --templates``: the project builds (templates are not built), and a
    ProjectManager copied to sessions/ creates a Worker that does the task."""
    made = domarkx(tmp_path, "init", "--templates", "new", env=ENV)
    assert made.code == 0, made.err
    root = tmp_path / "new"
    templates = root / "sessions" / "templates"
    assert sorted(p.stem for p in templates.glob("*.md")) == [
        "ConversationSummarizer",
        "DocAdmin",
        "ProjectManager",
        "RoleDesigner",
        "Worker",
    ]
    built = doit(root, env=ENV)
    assert built.code == 0, built.out + built.err
    assert sorted(p.name for p in (root / ".domarkx" / "exports").rglob("*.md")) == ["example.md"]
    with ChatServer() as server:
        endpoint = f"[endpoints.deepseek]\nbase_url = {json.dumps(server.base_url)}\n"
        with (root / "domarkx.toml").open("a", encoding="utf-8") as handle:
            handle.write("\n" + endpoint)
        pm = (templates / "ProjectManager.md").read_text(encoding="utf-8")
        (root / "sessions" / "pm.md").write_text(pm, encoding="utf-8")
        server.call(
            (
                "create_session",
                {
                    "template_name": "Worker",
                    "session_name": "w1",
                    "parameters": {"role": "a poet", "task": "a two-word poem"},
                },
            )
        )
        server.call(("send_message", {"session_name": "w1", "message": "Write it."}))
        server.call(("attempt_completion", {"result": "Moon rises."}))  # the worker
        server.reply("The poet wrote: Moon rises.")
        done = domarkx(root, "chat", "sessions/pm.md", "-m", "A poem, please.", env=ENV)
        assert done.code == 0, done.err
        worker = (root / "sessions" / "w1.md").read_text(encoding="utf-8")
        assert "role: a poet" in worker and "> Write it." in worker
        # The worker's request had its role and task filled in, and its tools.
        system = server.requests[2]["messages"][0]["content"]
        assert "You are a poet. Your task: a two-word poem" in system
        offered = [t["function"]["name"] for t in server.requests[2]["tools"]]
        assert "attempt_completion" in offered and "write_to_file" in offered
        pm_after = (root / "sessions" / "pm.md").read_text(encoding="utf-8")
        assert pm_after.rstrip().endswith("> The poet wrote: Moon rises.")
