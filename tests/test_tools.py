"""Model tool calls, end to end: tools in session-config or the setup script, calls run in the
sandbox (local shell and Docker), results as `## tool` messages, errors told to the model,
streaming deltas, msg-metadata, replay, and the older format.

The model is the loopback chat-completions server (tests/chat_server.py) reached through the
real `openai` client; sandboxes are real processes and containers.
"""

from __future__ import annotations

import json

import pytest

from domarkx.cli.main import main
from domarkx.data.models import NOT_RUN_BY_CONFIG
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.session.approval import Approval, ApprovalRequired
from domarkx.session.instance import InstanceManager
from tests.chat_server import ChatServer, Response
from tests.dockerutil import PYTHON_IMAGE, require_image

SETUP = '''
def add(a: int, b: int = 0) -> int:
    """Add two whole numbers.

    Longer explanation that the model does not need.
    """
    return a + b


def shout(text: str) -> str:
    """Upper-case a text; refuses empty text."""
    if not text:
        raise ValueError("nothing to shout")
    print("shouting")
    return text.upper()
'''

SESSION = """\
---
title: tools
---

```yaml session-config
{engine}timeout: 20
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  max_turns: {max_turns}
tools: [{tools}]
```

```python setup-script
{setup}
```

## user

> What is 2 + 3?
"""

ENV = {"DOMARKX_LLM_RETRIES": "1", "DOMARKX_LLM": "auto"}


@pytest.fixture(autouse=True)
def llm_env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def server():
    with ChatServer() as chat:
        yield chat


def write_session(
    project, server, *, tools="add, shout, bash", max_turns=4, engine="", setup=SETUP
):
    return project(
        {
            "sessions/calc.md": SESSION.format(
                base_url=server.base_url,
                tools=tools,
                max_turns=max_turns,
                engine=engine,
                setup=setup.strip("\n"),
            )
        }
    )


def run(root, *, approval=None, stream=None, ref="sessions/calc.md"):
    """Import and run through the real components; return (instance, export text)."""
    assert main(["import", ref]) == 0
    store = Store(root / ".domarkx", root)
    manager = InstanceManager(store, approval=approval)
    instance = manager.run("calc", stream=stream)
    from domarkx.session.export import export_ref

    return instance, export_ref(store, instance.instance_id)


def tool_messages(instance):
    return [m for m in instance.conversation if m.role == "tool"]


def text_of(message) -> str:
    return "\n".join(b.value for b in message.content if b.type == "text")


# --- the loop --------------------------------------------------------------------------


def test_a_function_call_runs_in_the_sandbox_and_the_model_reads_its_result(project, server):
    root = write_session(project, server)
    server.call(("add", {"a": 2, "b": 3}), text="Let me add.").reply("It is 5.")
    instance, exported = run(root)

    first, second = server.requests
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert list(offered) == ["add", "shout", "bash"]
    assert offered["add"]["description"] == "Add two whole numbers."
    assert offered["add"]["parameters"] == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 0}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert offered["bash"]["parameters"]["required"] == ["code"]
    # The second request carries the call and its result, as the protocol wants.
    assert second["messages"][-2]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
        }
    ]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}

    roles = [m.role for m in instance.conversation]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call_message, result, answer = instance.conversation[1:]
    assert call_message.message_metadata["tool_calls"] == [
        {"id": "call_1", "name": "add", "arguments": '{"a": 2, "b": 3}'}
    ]
    assert result.message_metadata == {"tool_call_id": "call_1", "name": "add"}
    assert text_of(result) == "5"
    meta = answer.message_metadata
    assert meta["provider"] == "openai" and meta["model"] == "test-model"
    assert meta["finish_reason"] == "stop"
    assert meta["usage"] == {"prompt_tokens": 1, "completion_tokens": 1}
    assert meta["replay_key"] == instance.llm_records[1]
    assert call_message.message_metadata["finish_reason"] == "tool_calls"
    assert '## tool\n\n```json msg-metadata\n{\n  "tool_call_id": "call_1",' in exported
    assert "> It is 5." in exported


def test_failures_are_results_the_model_reads_and_the_run_goes_on(project, server):
    root = write_session(project, server)
    server.call(
        ("shout", {"text": ""}),
        ("nope", {}),
        ("add", "{not json"),
        ("add", {"a": "two"}),
        ("add", {"a": 1, "c": 2}),
        ("shout", {"text": "hi"}),
    ).reply("Done.")
    instance, _ = run(root)
    assert instance.status == "exited"
    results = tool_messages(instance)
    assert [r.message_metadata.get("is_error", False) for r in results] == [
        True,
        True,
        True,
        True,
        True,
        False,
    ]
    raised, unknown, bad_json, bad_type, extra, fine = (text_of(r) for r in results)
    assert "ValueError: nothing to shout" in raised and "shouting" not in raised
    assert "in shout" in raised  # the traceback names the function, not the helper
    assert unknown == "unknown tool `nope`; the tools are: add, shout, bash"
    assert bad_json.startswith("the arguments are not valid JSON")
    assert bad_type == "the arguments do not fit `add`: `a` must be an integer"
    assert extra == "the arguments do not fit `add`: `c` is not a parameter"
    assert fine == "shouting\nHI"
    tool_results = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_results) == 6 and tool_results[1]["content"] == unknown


def test_the_bash_tool_shares_the_sandbox_with_the_code_blocks(project, server):
    root = write_session(project, server, tools="bash, python")
    server.call(
        ("bash", {"code": "export N=41; echo set"}), ("python", {"code": "print(add(40, 2))"})
    )
    server.call(("bash", {"code": "echo $((N + 1)); exit 3"})).reply("Both are 42.")
    (root / "domarkx.toml").write_text('approve = "auto"\n')  # the user's grant
    instance, _ = run(root)
    first, second, third = (text_of(m) for m in tool_messages(instance))
    assert first == "Output (exit code 0):\n```text\nset\n```"
    assert second == "Output (exit code 0):\n```text\n42\n```"  # the setup script's add
    assert third == "Output (exit code 3):\n```text\n42\n```"
    assert tool_messages(instance)[2].message_metadata["is_error"] is True


def test_model_written_code_in_tool_calls_asks_for_approval(project, server):
    root = write_session(project, server, tools="add, bash")
    server.call(("bash", {"code": "touch made-by-model"}), ("add", {"a": 1})).reply("ok")
    instance, _ = run(root, approval=Approval(mode="never"))
    refused, added = tool_messages(instance)
    assert text_of(refused) == NOT_RUN_BY_CONFIG and refused.message_metadata["is_error"] is True
    assert text_of(added) == "1"  # the setup script's function is the user's code: no asking
    assert not list(root.rglob("made-by-model"))

    # Without a terminal to ask, the run stops before the call (the reply is replayed).
    with pytest.raises(ApprovalRequired, match="tool call call_1 \\(bash\\)"):
        run(root, approval=Approval(mode="ask", ask=None))


def test_max_turns_bounds_the_requests(project, server):
    root = write_session(project, server, max_turns=2)
    server.call(("add", {"a": 1})).call(("add", {"a": 2})).reply("never asked")
    instance, _ = run(root)
    assert len(server.requests) == 2
    assert [m.role for m in instance.conversation][-2:] == ["assistant", "tool"]


def test_streamed_deltas_give_the_same_calls_reasoning_and_usage(project, server):
    root = write_session(project, server)
    usage = {"prompt_tokens": 31, "completion_tokens": 7}
    server.call(
        ("add", {"a": 20, "b": 22}), text="Adding now.", reasoning="2+3? use add", usage=usage
    )
    server.queue[-1].chunk_size = 3
    server.queue.append(Response(text="It is 42.", reasoning="done", chunk_size=2))
    chunks: list[str] = []
    instance, _ = run(root, stream=chunks.append)
    assert "".join(chunks) == "Adding now.It is 42."
    assert len(chunks) > 4
    assert all(r.get("stream") for r in server.requests)
    call_message = instance.conversation[1]
    assert call_message.message_metadata["tool_calls"] == [
        {"id": "call_1", "name": "add", "arguments": '{"a": 20, "b": 22}'}
    ]
    assert call_message.message_metadata["thought"] == "2+3? use add"
    assert call_message.message_metadata["usage"] == usage
    assert text_of(tool_messages(instance)[0]) == "42"
    assert instance.conversation[-1].message_metadata["thought"] == "done"


def test_replay_builds_the_same_export_offline(project, server, monkeypatch):
    root = write_session(project, server)
    server.call(("add", {"a": 2, "b": 3}), reasoning="think").reply("It is 5.")
    _, first = run(root)
    server.stop()
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    instance, again = run(root)
    assert again == first
    assert instance.conversation[1].message_metadata["thought"] == "think"
    record = next((root / ".domarkx" / "replay").rglob("*.json"))
    data = json.loads(record.read_text())
    assert data["format"] == 2 and "tools" in data["request"]


def test_an_unknown_name_in_session_config_names_its_line(project, server, capsys):
    write_session(project, server, tools="add, launch_rockets")
    assert main(["import", "sessions/calc.md"]) == 0
    assert main(["run", "calc"]) == 1
    err = capsys.readouterr().err
    assert "sessions/calc.md:12: `tools` names `launch_rockets`, which is no tool" in err
    assert server.requests == []


def test_setup_script_tools_list_of_the_older_format_declares_them(project, server):
    setup = SETUP + "\n\ntools = [add]\n"
    root = write_session(project, server, setup=setup)
    text = (root / "sessions/calc.md").read_text().replace("tools: [add, shout, bash]\n", "")
    (root / "sessions/calc.md").write_text(text)
    server.call(("add", {"a": 2, "b": 3})).reply("5")
    instance, _ = run(root)
    assert [t["function"]["name"] for t in server.requests[0]["tools"]] == ["add"]
    assert text_of(tool_messages(instance)[0]) == "5"


# --- the older format's sessions ----------------------------------------------------

# Modelled on the older project's function-execution test sessions: a client built in the
# setup script, `tools = [...]`, and a conversation that ends with a call not yet answered.
OLDER = """\
---
title: "Simple Tool Call"
---

```json session-config
{
  "type": "AssistantAgentState",
  "version": "1.0.0",
  "llm_context": {}
}
```

```python setup-script
from domarkx.models.openrouter import OpenRouterR1OpenAIChatCompletionClient
import os

client = OpenRouterR1OpenAIChatCompletionClient(
    model="test-model",
    base_url="BASE_URL",
    api_key="mock_key",
    model_info={"vision": False, "function_calling": True},
)

class MyTool:
    def add(self, a: int, b: int) -> int:
        return a + b

tools = [MyTool().add]
```

## system_message

> You are a helpful AI assistant.

## user

```json msg-metadata
{
  "source": "user",
  "type": "UserMessage"
}
```

> Add 2 and 2.

## assistant

```json msg-metadata
{
  "content": [
    {
      "id": "call_123",
      "arguments": "{\\"a\\": 2, \\"b\\": 2}",
      "name": "add"
    }
  ],
  "source": "assistant",
  "type": "AssistantMessage"
}
```
"""


def test_an_older_session_fails_until_migrated_then_runs_its_pending_call(project, server, capsys):
    root = project({"sessions/calc.md": OLDER.replace("BASE_URL", server.base_url)})
    assert main(["import", "sessions/calc.md"]) == 0
    assert main(["run", "calc"]) == 1
    err = capsys.readouterr().err
    assert "sessions/calc.md:17: the setup script builds a model `client`" in err
    assert "domarkx migrate sessions/calc.md" in err

    before = (root / "sessions/calc.md").read_text()
    assert main(["migrate", "sessions/calc.md"]) == 0
    after = (root / "sessions/calc.md").read_text()
    assert '"model": {"provider": "openai", "name": "test-model", "base_url": ' in after
    assert "mock_key" not in after and "client =" not in after and "openrouter" not in after
    # Only the client (and its import) left the setup script; only `model` came in.
    client = before[before.index("client = ") : before.index("class MyTool") - 1]
    expected = before.replace(before.splitlines(True)[13], "").replace(client, "")
    expected = expected.replace(
        '"llm_context": {}\n',
        '"llm_context": {},\n  "model": {"provider": "openai", "name": "test-model", '
        f'"base_url": "{server.base_url}"}}\n',
    )
    assert after == expected

    server.reply("2 + 2 = 4.")
    instance, exported = run(root)
    assert [m.role for m in instance.conversation][-3:] == ["assistant", "tool", "assistant"]
    assert text_of(tool_messages(instance)[0]) == "4"
    (request,) = server.requests
    assert request["messages"][-1] == {"role": "tool", "tool_call_id": "call_123", "content": "4"}
    assert "> 2 + 2 = 4." in exported
    assert main(["migrate", "sessions/calc.md"]) == 0  # nothing left to do: unchanged
    assert (root / "sessions/calc.md").read_text() == after


def test_unknow_headings_name_migrate_and_migrate_renames_them(project, capsys):
    text = "## user\n\n> hi\n\n## Unknow\n\n> result\n\n## assistant\n\n```text\n## unknow\n```\n"
    root = project({"sessions/old.md": text})
    assert main(["import", "sessions/old.md"]) == 1
    err = capsys.readouterr().err
    assert "sessions/old.md:5: `## Unknow` is the older domarkx format's heading" in err
    assert "domarkx migrate sessions/old.md" in err
    assert main(["migrate", "sessions/old.md"]) == 0
    assert (root / "sessions/old.md").read_text() == text.replace("## Unknow", "## tool")
    assert main(["import", "sessions/old.md"]) == 0


def test_migrate_of_a_missing_file_is_one_clear_error(project, capsys):
    project()
    assert main(["migrate", "sessions/none.md"]) == 1
    assert "sessions/none.md" in capsys.readouterr().err


# --- Docker ---------------------------------------------------------------------------


@pytest.mark.docker
def test_tools_run_inside_the_container(project, server):
    image = require_image(PYTHON_IMAGE)
    setup = SETUP + "\n\nimport socket\ndef where() -> str:\n    return socket.gethostname()\n"
    root = write_session(
        project,
        server,
        tools="add, where, bash",
        engine=f"engine: docker\nimage: {image}\n",
        setup=setup,
    )
    server.call(("add", {"a": 2, "b": 3}), ("where", {}), ("bash", {"code": "cat /etc/hostname"}))
    server.call(("add", {"a": "x"})).reply("5")
    instance, _ = run(root, approval=Approval(mode="ask", ask=None))  # docker: no asking
    added, where, hostname, refused = tool_messages(instance)
    assert text_of(added) == "5"
    import socket

    assert text_of(where) != socket.gethostname()
    assert text_of(where) in text_of(hostname)
    assert refused.message_metadata["is_error"] is True
    assert server.requests[0]["tools"][0]["function"]["parameters"]["required"] == ["a"]


def test_a_conversation_without_tools_sends_no_tools_field(project, server):
    root = write_session(project, server, tools="")
    text = (root / "sessions/calc.md").read_text().replace("tools: []\n", "")
    (root / "sessions/calc.md").write_text(text)
    server.reply("5")
    run(root)
    assert "tools" not in server.requests[0]


def test_errors_of_declared_tools_without_a_python_setup_script(project, server):
    root = write_session(project, server, tools="add", setup="echo hi")
    text = (
        (root / "sessions/calc.md")
        .read_text()
        .replace("```python setup-script", "```bash setup-script")
    )
    (root / "sessions/calc.md").write_text(text)
    assert main(["import", "sessions/calc.md"]) == 0
    with pytest.raises(DomarkxError, match="no Python setup-script"):
        InstanceManager(Store(root / ".domarkx", root)).run("calc")


def test_a_plain_run_on_a_terminal_streams_the_reply_to_stderr(project, server):
    """Through a pty, as a user's terminal; with pipes (a build, a script) nothing streams."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from tests.support import process_env

    write_session(project, server)
    server.call(("add", {"a": 2, "b": 3}), text="Adding. ").reply("The sum is five.")
    server.queue[0].chunk_size = 2
    env = process_env()
    assert (
        subprocess.run(
            [sys.executable, "-m", "domarkx", "import", "sessions/calc.md"], env=env
        ).returncode
        == 0
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "domarkx", "run", "calc"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    seen = b""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert b"Adding. The sum is five." in seen.replace(b"\r\n", b"\n")
    assert all(r.get("stream") for r in server.requests)
    assert len(proc.stdout.read().split()) == 1  # stdout: the instance id alone


def test_a_call_past_the_timeout_is_an_error_and_later_calls_say_why(project, server):
    setup = (
        SETUP
        + "\n\ndef nap(seconds: float) -> str:\n    import time\n    time.sleep(seconds)\n    return 'rested'\n"
    )
    root = write_session(project, server, tools="add, nap", setup=setup)
    text = (root / "sessions/calc.md").read_text().replace("timeout: 20", "timeout: 1")
    (root / "sessions/calc.md").write_text(text)
    server.call(("nap", {"seconds": 30}), ("add", {"a": 1})).reply("ok")
    instance, _ = run(root)
    napped, added = tool_messages(instance)
    assert napped.message_metadata["is_error"] and "did not complete (timed out)" in text_of(napped)
    assert added.message_metadata["is_error"] and "was restarted" in text_of(added)


def test_an_export_with_tool_messages_imports_back_to_the_same_bytes(project, server, tmp_path):
    root = write_session(project, server)
    server.call(("shout", {"text": "multi\nline"}), ("nope", {})).reply("Done.")
    _, exported = run(root)
    (root / "sessions/again.md").write_text(exported)
    assert main(["import", "sessions/again.md"]) == 0
    store = Store(root / ".domarkx", root)
    from domarkx.session.export import export_ref

    assert export_ref(store, "again") == exported


def test_the_scripted_provider_calls_tools_offline(project):
    root = project(
        {
            "sessions/calc.md": """\
                ---
                scripted_replies:
                  - {text: "Adding.", tool_calls: [{name: add, arguments: {a: 2, b: 2}}]}
                  - "Four."
                ---

                ```yaml session-config
                model: {provider: scripted}
                tools: [add]
                ```

                ```python setup-script
                def add(a: int, b: int) -> int:
                    return a + b
                ```

                ## user

                > 2 + 2?
                """
        }
    )
    instance, _ = run(root)
    assert [m.role for m in instance.conversation] == ["user", "assistant", "tool", "assistant"]
    assert instance.conversation[1].message_metadata["tool_calls"] == [
        {"id": "call_0_0", "name": "add", "arguments": '{"a": 2, "b": 2}'}
    ]
    assert text_of(tool_messages(instance)[0]) == "4"
    assert instance.conversation[1].message_metadata["replay_key"] is None


def test_pending_calls_in_every_form_and_a_trailing_result_asks_the_model():
    from domarkx.data.models import Message, TextBlock
    from domarkx.llm.reply import needs_model, pending_calls

    user = Message(role="user", content=[TextBlock(value="hi")])
    flat = {"tool_calls": [{"id": "a", "name": "f", "arguments": "{}"}, {"id": "b", "name": "g"}]}
    openai_form = {
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    }
    older = {"content": [{"id": "a", "name": "f", "arguments": {"x": 1}}]}
    for metadata in (flat, openai_form, older):
        conversation = [user, Message(role="assistant", message_metadata=metadata)]
        index, calls = pending_calls(conversation)
        assert index == 1 and calls[0].name == "f" and calls[0].id == "a"
    answered_a = Message(role="tool", message_metadata={"tool_call_id": "a"})
    index, calls = pending_calls(
        [user, Message(role="assistant", message_metadata=flat), answered_a]
    )
    assert [c.id for c in calls] == ["b"]
    older_answer = Message(
        role="tool", message_metadata={"content": [{"call_id": "a", "content": "1"}]}
    )
    assert pending_calls(
        [user, Message(role="assistant", message_metadata=older), older_answer]
    ) == (-1, [])
    assert needs_model([user, Message(role="assistant", message_metadata=older), older_answer])
    # A later user message leaves old calls behind: they are not run.
    later = [user, Message(role="assistant", message_metadata=flat), user]
    assert pending_calls(later) == (-1, [])
    assert older["content"][0]["arguments"] == {"x": 1}
    assert (
        pending_calls([user, Message(role="assistant", message_metadata=older)])[1][0].arguments
        == '{"x": 1}'
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # no session-config: one is written where the setup script stood; it goes when empty
            "```python setup-script\nfrom a import X\nclient = X(model='m')\n```\n\n## user\n\n> hi\n",
            '```yaml session-config\nmodel: {"provider": "openai", "name": "m"}\n```\n\n## user\n\n> hi\n',
        ),
        (  # an empty JSON object; the key's variable is kept, never a key
            "```json session-config\n{}\n```\n\n```python setup-script\n"
            'client = X(model="m", api_key=os.environ["K"])\nx = 1\n```\n',
            '```json session-config\n{\n  "model": {"provider": "openai", "name": "m", "api_key_env": "K"}\n}\n```\n\n'
            "```python setup-script\nx = 1\n```\n",
        ),
        (  # YAML: appended; an import used elsewhere stays
            "```yaml session-config\ntimeout: 3\n```\n\n```python setup-script\nfrom a import X\n"
            "client = X(model='m', api_key='sk-secret')\ny = X\n```\n",
            '```yaml session-config\ntimeout: 3\nmodel: {"provider": "openai", "name": "m"}\n```\n\n'
            "```python setup-script\nfrom a import X\ny = X\n```\n",
        ),
        (  # a model already configured: only the client goes
            "```yaml session-config\nmodel: {provider: scripted}\n```\n\n```python setup-script\n"
            "client = X(model='m')\ny = 1\n```\n",
            "```yaml session-config\nmodel: {provider: scripted}\n```\n\n```python setup-script\ny = 1\n```\n",
        ),
        (  # `import os` read only by the client's key goes with it: the script empties
            "```python setup-script\nimport os\n"
            'client = X(model="m", api_key=os.getenv("K"))\n```\n\n## user\n\n> hi\n',
            '```yaml session-config\nmodel: {"provider": "openai", "name": "m", "api_key_env": "K"}\n```\n\n'
            "## user\n\n> hi\n",
        ),
        (  # `import os` that other code reads stays
            "```python setup-script\nimport os\n"
            'client = X(model="m", api_key=os.getenv("K"))\nhome = os.getcwd()\n```\n',
            '```yaml session-config\nmodel: {"provider": "openai", "name": "m", "api_key_env": "K"}\n```\n\n'
            "```python setup-script\nimport os\nhome = os.getcwd()\n```\n",
        ),
        (  # CRLF line endings stay CRLF
            "## user\r\n\r\n> hi\r\n\r\n## unknow\r\n\r\n> r\r\n",
            "## user\r\n\r\n> hi\r\n\r\n## tool\r\n\r\n> r\r\n",
        ),
    ],
)
def test_migrate_rewrites_only_what_the_run_cannot_use(before, after):
    from domarkx.session.legacy import migrate_text

    assert migrate_text(before) == after
    assert migrate_text(after) == after
