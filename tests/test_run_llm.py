"""`domarkx run` asking a model for the assistant's turn, end to end through the CLI.

The model is a real chat-completions server on 127.0.0.1 (tests/chat_server.py),
reached through the real `openai` client; nothing is patched.
"""

from __future__ import annotations

import json

from domarkx.data.store import Store
from tests.chat_server import ChatServer

SESSION = """
```yaml session-config
timeout: 10
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
  temperature: 0
  max_turns: 3
```

## system

> You are a careful shell assistant.

## user

> How many lines does `printf 'a\\nb\\n'` print?
"""

# The user grants the key to the test server, as docs/security.md says.
GRANT = """\
[endpoints.test]
base_url = "{base_url}"
api_key_env = "DOMARKX_TEST_KEY"
"""


def files(base_url: str) -> dict[str, str]:
    return {
        "sessions/ask.md": SESSION.format(base_url=base_url),
        "domarkx.toml": GRANT.format(base_url=base_url),
    }


ENV = {"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM_RETRIES": "2"}


def import_and_run(cli, *, env):
    code, _, err = cli("import", "sessions/ask.md", env=env)
    assert code == 0, err
    return cli("run", "--yes", "ask", env=env)


def test_the_model_answers_its_code_runs_and_the_output_goes_back(project, cli):
    with ChatServer() as server:
        root = project(files(server.base_url))
        server.reply(
            "Let me count:\n\n```bash\nprintf 'a\\nb\\n' | wc -l\n```", "It prints 2 lines."
        )
        code, out, err = import_and_run(cli, env=ENV)
        assert code == 0, err
        instance_id = out.strip()

    assert len(server.requests) == 2
    first, second = server.requests
    assert first["model"] == "test-model" and first["temperature"] == 0
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    feedback = second["messages"][-1]
    assert feedback["role"] == "user" and "2" in feedback["content"]

    code, exported, err = cli("export", instance_id)
    assert code == 0, err
    assert exported.count("## assistant") == 2
    assert (
        "```bash\nprintf 'a\\nb\\n' | wc -l\n```\n\n```text output exit_code=0\n2\n```" in exported
    )
    assert "> It prints 2 lines." in exported

    store = Store(root / ".domarkx", root)
    instance = store.get_instance(instance_id)
    assert instance.status == "exited" and len(instance.llm_records) == 2
    assert len(list((root / ".domarkx" / "replay").rglob("*.json"))) == 2


def test_replay_builds_the_same_export_with_the_server_gone(project, cli):
    with ChatServer() as server:
        base_url = server.base_url
        project(files(base_url))
        server.reply("```bash\necho counted\n```", "Two.")
        code, out, err = import_and_run(cli, env=ENV)
        assert code == 0, err
        _, first_export, _ = cli("export", out.strip())

    # The server is stopped; no key either: replay must answer everything.
    offline = {"DOMARKX_LLM": "replay", "DOMARKX_TEST_KEY": None}
    code, out, err = cli("run", "--yes", "ask", env=offline)
    assert code == 0, err
    _, second_export, _ = cli("export", out.strip())
    assert second_export == first_export

    # A new question is a replay miss: one clear error naming the session.
    (project() / "sessions" / "ask.md").write_text(
        SESSION.format(base_url=base_url).replace("How many", "How few"), encoding="utf-8"
    )
    code, out, err = import_and_run(cli, env=offline)
    assert code == 1
    assert "sessions/ask.md" in err and "Traceback" not in err


def test_a_server_failing_for_good_marks_the_instance_failed_and_keeps_what_ran(project, cli):
    with ChatServer() as server:
        root = project(files(server.base_url))
        server.reply("```bash\necho first-turn\n```")
        for _ in range(10):
            server.fail(500, "the model is on fire")
        code, _, err = import_and_run(cli, env=ENV)

    assert code == 1
    assert "500" in err and "Traceback" not in err
    store = Store(root / ".domarkx", root)
    [instance_id] = store.instance_ids()
    instance = store.get_instance(instance_id)
    assert instance.status == "failed"
    texts = json.dumps([m.model_dump() for m in instance.conversation])
    assert "first-turn" in texts  # the first reply and its output were kept
    assert len(instance.llm_records) == 1


def test_a_new_recording_rebuilds_the_export(project, cli):
    """The build's run depends on the replay records it used (``DOMARKX_LLM=record``)."""
    from tests.support import doit

    with ChatServer() as server:
        root = project(
            {
                "dodo.py": "from domarkx.pipeline.tasks import *  # noqa: F403\n",
                **files(server.base_url),
            }
        )
        server.reply("First answer.")
        built = doit(root, env=ENV)
        assert built.code == 0, built.err
        export = root / ".domarkx" / "exports" / "ask.md"
        assert "> First answer." in export.read_text()

        assert doit(root, env=ENV).executed == set()  # up to date: no call, nothing re-run

        server.reply("Second answer.")
        recorded = doit(root, "forget", "run:ask", env=ENV)
        assert recorded.code == 0, recorded.err
        again = doit(root, env={**ENV, "DOMARKX_LLM": "record"})
        assert again.code == 0, again.err
        assert "> Second answer." in export.read_text()

    # Offline: the new record now replays, and a plain build has nothing to do.
    offline = {"DOMARKX_LLM": "replay", "DOMARKX_TEST_KEY": None}
    assert doit(root, env=offline).executed == set()
    (root / ".domarkx" / "cache" / "run" / "_keys").rename(root / ".domarkx" / "cache" / "old-keys")
    assert doit(root, "forget", "run:ask", env=offline).code == 0
    rebuilt = doit(root, env=offline)
    assert rebuilt.code == 0, rebuilt.err
    assert "> Second answer." in export.read_text()
    assert len(server.requests) == 2


def test_no_model_server_running_is_one_line_naming_the_sessions_model(project, cli):
    # A newcomer's first run with no server listening: the session's `model:` line, a hint.
    with ChatServer() as server:
        base_url = server.base_url  # the port is closed once the server stops
    project(files(base_url))
    code, _, err = import_and_run(cli, env={**ENV, "DOMARKX_LLM_RETRIES": "0"})
    model_line = SESSION.splitlines().index("model:") + 1
    assert code == 1
    assert err.startswith(
        f"domarkx: error: sessions/ask.md:{model_line}: cannot reach the model server at {base_url}"
    )
    assert "\n  hint: check `model.base_url`" in err
    assert "Traceback" not in err
