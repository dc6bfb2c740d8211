"""The model loop against a real chat-completions server on 127.0.0.1, and the replay cache."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from domarkx.data.models import CodeBlock, Message, ModelSettings, OutputBlock, TextBlock
from domarkx.errors import LLMError
from domarkx.llm.loop import llm_turns
from domarkx.llm.messages import parse_reply, render_code, to_chat_messages
from domarkx.llm.provider import provider_for
from domarkx.llm.replay import ReplayCache, canonical_request, request_key
from domarkx.llm.reply import wants_reply
from tests.chat_server import ChatServer, Response

KEY_ENV = "DOMARKX_TEST_LLM_KEY"
CODE_REPLY = "Let me check:\n\n```bash\necho hi-from-bash\n```"


@pytest.fixture(autouse=True)
def fast_llm_env(monkeypatch):
    monkeypatch.setenv("DOMARKX_LLM_RETRIES", "2")
    monkeypatch.setenv("DOMARKX_LLM", "auto")
    monkeypatch.setenv(KEY_ENV, "sk-test-123")


@pytest.fixture
def server():
    with ChatServer() as chat:
        yield chat


def run_bash(block: CodeBlock) -> list[OutputBlock] | None:
    """Run bash blocks for real; other languages are not runnable here."""
    if block.language not in ("bash", "sh"):
        return None
    done = subprocess.run(
        ["bash", "-c", block.code], capture_output=True, text=True, timeout=10, check=False
    )
    outputs = [OutputBlock(stream="stdout", text=done.stdout, exit_code=done.returncode)]
    if done.stderr:
        outputs.append(OutputBlock(stream="stderr", text=done.stderr))
    return outputs


def question(text: str = "What does echo print?") -> list[Message]:
    return [
        Message(role="system", content=[TextBlock(value="You are a careful shell assistant.")]),
        Message(role="user", content=[TextBlock(value=text, quoted=True)]),
    ]


def settings_for(base_url: str, **extra) -> ModelSettings:
    values: dict[str, Any] = {
        "provider": "openai",
        "name": "test-model",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "temperature": 0,
        "max_turns": 4,
    }
    values.update(extra)
    return ModelSettings(**values)


class Run:
    """One call of llm_turns with counters around it."""

    def __init__(self, tmp_path: Path, conversation: list[Message] | None = None) -> None:
        self.conversation = conversation if conversation is not None else question()
        self.cache_dir = tmp_path / "replay"
        self.saves = 0
        self.chunks: list[str] = []

    def on_change(self) -> None:
        self.saves += 1

    def __call__(self, settings: ModelSettings, *, stream: bool = False, front_matter=None):
        return llm_turns(
            self.conversation,
            settings,
            front_matter=front_matter or {},
            execute=run_bash,
            on_change=self.on_change,
            cache=ReplayCache(self.cache_dir),
            context="sessions/demo.md",
            stream=self.chunks.append if stream else None,
        )


# --- against the server ------------------------------------------------------------


def test_a_reply_is_added(server, tmp_path):
    server.reply("Hello there.")
    run = Run(tmp_path)
    keys = run(settings_for(server.base_url))
    assert run.conversation[-1].role == "assistant"
    assert run.conversation[-1].content == [TextBlock(value="Hello there.", quoted=True)]
    assert len(keys) == 1 and run.saves == 1
    sent = server.requests[0]
    assert sent["model"] == "test-model" and sent["temperature"] == 0
    assert sent["messages"] == [
        {"role": "system", "content": "You are a careful shell assistant."},
        {"role": "user", "content": "What does echo print?"},
    ]
    assert server.headers[0]["authorization"] == "Bearer sk-test-123"
    record = json.loads((run.cache_dir / keys[0][:2] / f"{keys[0]}.json").read_text())
    assert record["reply"]["text"] == "Hello there." and record["request"]["model"] == "test-model"
    assert "base_url" not in json.dumps(record["request"])


def test_code_in_a_reply_runs_and_its_output_is_sent_back(server, tmp_path):
    server.reply(CODE_REPLY, "It printed hi-from-bash.")
    run = Run(tmp_path)
    keys = run(settings_for(server.base_url))
    assert len(keys) == 2 and len(server.requests) == 2
    first, last = run.conversation[-2], run.conversation[-1]
    assert [b.type for b in first.content] == ["text", "code", "output"]
    assert first.content[2].text == "hi-from-bash\n" and first.content[2].exit_code == 0
    assert last.content == [TextBlock(value="It printed hi-from-bash.", quoted=True)]
    # reply, its output, the final reply: each saved as it happened
    assert run.saves == 3
    second = server.requests[1]["messages"]
    assert second[-2] == {
        "role": "assistant",
        "content": "Let me check:\n\n```bash\necho hi-from-bash\n```",
    }
    assert second[-1] == {
        "role": "user",
        "content": "Output of the code block above (exit code 0):\n```text\nhi-from-bash\n```",
    }


def test_max_turns_stops_the_loop(server, tmp_path, capsys):
    server.default = Response(text=CODE_REPLY)
    run = Run(tmp_path)
    keys = run(settings_for(server.base_url, max_turns=2))
    assert len(server.requests) == 2 and len(keys) == 2
    assert [m.role for m in run.conversation] == ["system", "user", "assistant", "assistant"]
    assert run.conversation[-1].content[-1].type == "output"
    # Reaching the limit is reported, not silent.
    assert "stopped after model.max_turns = 2 model calls" in capsys.readouterr().err


def test_a_loop_that_ends_by_itself_says_nothing_of_max_turns(server, tmp_path, capsys):
    server.reply("No code needed.")
    Run(tmp_path)(settings_for(server.base_url, max_turns=2))
    assert "max_turns" not in capsys.readouterr().err


def test_a_429_is_retried_after_the_delay_the_server_asks_and_says_so(server, tmp_path, capsys):
    server.fail(429, "slow down", headers={"retry-after-ms": "10"}).reply("Fine now.")
    run = Run(tmp_path)
    run(settings_for(server.base_url))
    assert len(server.requests) == 2
    # 10 ms as asked, not the client's own first backoff (0.375 s at least).
    assert server.received_at[1] - server.received_at[0] < 0.3
    assert run.conversation[-1].content[0].value == "Fine now."
    err = capsys.readouterr().err
    assert (
        f"the model server at {server.base_url}: HTTP 429; retrying in 0.01 s (try 2 of 3)" in err
    )


def test_without_retry_after_the_client_backs_off(server, tmp_path, capsys):
    server.fail(503, "busy").reply("Fine now.")
    Run(tmp_path)(settings_for(server.base_url))
    assert 0.3 < server.received_at[1] - server.received_at[0] < 5  # 0.5 s less <= 25 % jitter
    assert "HTTP 503; retrying in 0." in capsys.readouterr().err


def test_a_500_forever_is_a_clear_error_and_keeps_what_was_done(server, tmp_path):
    server.reply(CODE_REPLY)
    server.default = Response(
        status=500, error="the GPU caught fire", headers={"retry-after-ms": "10"}
    )
    run = Run(tmp_path)
    with pytest.raises(LLMError) as failure:
        run(settings_for(server.base_url))
    message = str(failure.value)
    assert "HTTP 500" in message and "the GPU caught fire" in message
    assert server.base_url in message and "tried 3 times" in message
    assert len(server.requests) == 1 + 3  # the good call, then 1 + DOMARKX_LLM_RETRIES
    assert [m.role for m in run.conversation] == ["system", "user", "assistant"]
    assert run.conversation[-1].content[-1].text == "hi-from-bash\n"
    assert run.saves == 3  # reply, output, and once more on the failure
    assert len(getattr(failure.value, "llm_records", [])) == 1


def test_replay_offline_gives_the_same_conversation(tmp_path, monkeypatch):
    with ChatServer() as chat:
        chat.reply(CODE_REPLY, "It printed hi-from-bash.")
        online = Run(tmp_path)
        online_keys = online(settings_for(chat.base_url))
        url = chat.base_url
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    monkeypatch.delenv(KEY_ENV)  # replaying needs no key
    offline = Run(tmp_path)
    offline_keys = offline(settings_for(url), stream=True)
    assert offline_keys == online_keys
    dump = [m.model_dump() for m in offline.conversation]
    assert dump == [m.model_dump() for m in online.conversation]
    assert "".join(offline.chunks) == CODE_REPLY + "It printed hi-from-bash."
    # the same model behind another address replays too
    mirror = Run(tmp_path)
    assert mirror(settings_for("http://127.0.0.1:9/v1")) == online_keys


def test_a_record_of_format_1_still_replays(tmp_path, monkeypatch):
    """Records written before replies had structure hold the text alone."""
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    settings = settings_for("http://127.0.0.1:9/v1")
    request = canonical_request(provider_for(settings), to_chat_messages(question()))
    key = request_key(request)
    path = tmp_path / "replay" / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    record = {"format": 1, "key": key, "request": request, "reply": "Old answer."}
    path.write_text(json.dumps(record))
    run = Run(tmp_path)
    assert run(settings) == [key]
    answer = run.conversation[-1]
    assert answer.content == [TextBlock(value="Old answer.", quoted=True)]
    assert answer.message_metadata == {
        "provider": "openai",
        "model": "test-model",
        "finish_reason": None,
        "usage": None,
        "replay_key": key,
    }


def test_a_replay_miss_names_the_session_and_message(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    run = Run(tmp_path)
    with pytest.raises(LLMError) as failure:
        run(settings_for(server.base_url))
    message = str(failure.value)
    assert "sessions/demo.md, message 3" in message and "DOMARKX_LLM=replay" in message
    assert server.requests == [] and len(run.conversation) == 2


def test_record_mode_calls_again_and_overwrites(server, tmp_path, monkeypatch):
    server.reply("first", "second")
    Run(tmp_path)(settings_for(server.base_url))
    monkeypatch.setenv("DOMARKX_LLM", "record")
    run = Run(tmp_path)
    keys = run(settings_for(server.base_url))
    assert len(server.requests) == 2 and run.conversation[-1].content[0].value == "second"
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    again = Run(tmp_path)
    assert again(settings_for(server.base_url)) == keys
    assert again.conversation[-1].content[0].value == "second"


def test_an_invalid_mode_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMARKX_LLM", "sometimes")
    with pytest.raises(LLMError, match=r"(?s)DOMARKX_LLM='sometimes'.*auto, replay, record"):
        ReplayCache(tmp_path)


def test_streaming_passes_chunks_as_they_come(server, tmp_path):
    text = "Streaming works, in several small pieces."
    server.reply(text)
    run = Run(tmp_path)
    run(settings_for(server.base_url), stream=True)
    assert server.requests[0]["stream"] is True
    assert len(run.chunks) > 3 and "".join(run.chunks) == text
    assert run.conversation[-1].content[0].value == text


def test_a_missing_key_names_the_variable(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMError, match=KEY_ENV):
        Run(tmp_path)(settings_for(server.base_url))
    assert server.requests == []


def test_no_key_variable_sends_a_placeholder_for_local_servers(server, tmp_path):
    server.reply("ok")
    Run(tmp_path)(settings_for(server.base_url, api_key_env=None))
    assert server.headers[0]["authorization"] == "Bearer no-key"


def test_an_unreachable_server_is_named(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match=f"cannot reach the model server at {url}"):
        Run(tmp_path)(settings_for(url))


def test_a_refused_request_shows_the_server_message_and_is_not_retried(server, tmp_path):
    server.fail(400, "model 'test-model' does not exist")
    with pytest.raises(LLMError) as failure:
        Run(tmp_path)(settings_for(server.base_url))
    assert "HTTP 400" in str(failure.value)
    assert "model 'test-model' does not exist" in str(failure.value)
    assert len(server.requests) == 1


def test_a_timeout_is_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DOMARKX_LLM_RETRIES", "1")
    server.default = Response(text="too late", delay=2)
    with pytest.raises(LLMError, match=r"did not answer within 0.2 s \(tried 2 times\)"):
        Run(tmp_path)(settings_for(server.base_url, timeout=0.2))
    assert len(server.requests) == 2  # each given up after 0.2 s, not answered after 2 s


def test_generation_parameters_are_sent_and_keyed(server, tmp_path):
    server.reply("a", "b")
    run = Run(tmp_path)
    first = run(settings_for(server.base_url, top_p=0.5, timeout=30))
    assert server.requests[0]["top_p"] == 0.5 and "timeout" not in server.requests[0]
    second = Run(tmp_path)(settings_for(server.base_url, top_p=0.9))
    assert first != second and len(server.requests) == 2


# --- providers ---------------------------------------------------------------------


def test_an_unknown_provider_lists_the_known_ones():
    with pytest.raises(LLMError) as failure:
        provider_for(ModelSettings(provider="nope"), {})
    assert "'nope'" in str(failure.value)
    assert "openai" in str(failure.value) and "scripted" in str(failure.value)


def test_the_scripted_provider_runs_offline_without_records(tmp_path):
    front_matter = {"scripted_replies": ["Look:\n```bash\necho scripted\n```", "Done."]}
    run = Run(tmp_path)
    keys = run(ModelSettings(provider="scripted"), front_matter=front_matter, stream=True)
    assert keys == [] and not run.cache_dir.exists()
    assert run.conversation[-2].content[-1].text == "scripted\n"
    assert run.conversation[-1].content[0].value == "Done."
    assert run.chunks == front_matter["scripted_replies"]
    # the same document runs the same way again
    again = Run(tmp_path)
    again(ModelSettings(provider="scripted"), front_matter=front_matter)
    assert [m.model_dump() for m in again.conversation] == [
        m.model_dump() for m in run.conversation
    ]


def test_the_scripted_provider_answers_the_last_question():
    conversation = [*question("first?"), Message(role="assistant", content=[TextBlock(value="1")])]
    conversation.append(Message(role="user", content=[TextBlock(value="second?")]))
    provider = provider_for(ModelSettings(provider="scripted"), {"scripted_replies": ["x"]})
    assert provider.complete(to_chat_messages(conversation)).text == "x"


def test_the_scripted_provider_running_out_is_an_error(tmp_path):
    front_matter = {"scripted_replies": ["```bash\necho 1\n```"]}
    run = Run(tmp_path)
    with pytest.raises(LLMError, match="has 1 reply and was asked for reply 2"):
        run(ModelSettings(provider="scripted"), front_matter=front_matter)
    assert run.conversation[-1].content[-1].text == "1\n"
    with pytest.raises(LLMError, match="scripted_replies"):
        Run(tmp_path)(ModelSettings(provider="scripted"), front_matter={})


def test_without_the_openai_package_the_message_says_what_to_install(tmp_path):
    script = (
        "import sys; sys.modules['openai'] = None\n"
        "from domarkx.data.models import ModelSettings\n"
        "from domarkx.llm.provider import provider_for\n"
        "p = provider_for(ModelSettings(provider='openai', name='m'), {})\n"
        "try:\n    p.complete([{'role': 'user', 'content': 'hi'}])\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    assert "LLMError the openai provider needs the openai package" in done.stdout
    assert "pip install 'domarkx[openai]'" in done.stdout


def test_wants_reply():
    assert wants_reply(question())
    assert not wants_reply([])
    assert not wants_reply([*question(), Message(role="assistant")])


def test_a_conversation_that_ends_with_the_assistant_asks_nothing(server, tmp_path):
    run = Run(tmp_path, [*question(), Message(role="assistant")])
    assert run(settings_for(server.base_url)) == [] and server.requests == []


# --- what is sent, what is read back -------------------------------------------------


def test_outputs_of_several_blocks_are_fed_back_together():
    assistant = Message(
        role="assistant",
        content=[
            TextBlock(value="Two steps."),
            CodeBlock(language="bash", name="a.sh", code="echo a"),
            OutputBlock(text="a\n", exit_code=0),
            CodeBlock(language="bash", code="ls nope"),
            OutputBlock(text="", exit_code=2),
            OutputBlock(stream="stderr", text="ls: nope: No such file\n"),
        ],
    )
    sent = to_chat_messages([*question(), assistant])
    assert sent[2] == {
        "role": "assistant",
        "content": "Two steps.\n\n```bash name=a.sh\necho a\n```\n\n```bash\nls nope\n```",
    }
    assert sent[3]["role"] == "user"
    assert sent[3]["content"] == (
        "Output of the code blocks above.\n\n"
        "Block 1 (`a.sh`) (exit code 0):\n```text\na\n```\n\n"
        "Block 2 (exit code 2):\nStandard error:\n```text\nls: nope: No such file\n```"
    )


def test_tool_calls_of_the_older_format_are_sent_as_tool_calls():
    call = {"id": "call_1", "name": "tool_execute_command", "arguments": '{"command": "ls"}'}
    conversation = [
        *question(),
        Message(
            role="assistant",
            message_metadata={"content": [call], "source": "assistant", "type": "AssistantMessage"},
        ),
        Message(
            role="tool",
            message_metadata={
                "type": "FunctionExecutionResultMessage",
                "content": [{"call_id": "call_1", "content": "a.txt", "is_error": False}],
            },
        ),
        Message(role="user", content=[TextBlock(value="And now?")]),
    ]
    sent = to_chat_messages(conversation)
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "tool_execute_command", "arguments": '{"command": "ls"}'},
            }
        ],
    }
    assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}
    assert sent[4] == {"role": "user", "content": "And now?"}


def test_unanswered_tool_calls_and_lone_tool_messages_become_text():
    call = {"id": "call_1", "name": "ls", "arguments": "{}"}
    conversation = [
        *question(),
        Message(role="assistant", message_metadata={"content": [call]}),
        Message(role="tool", content=[TextBlock(value="a.txt")]),
    ]
    sent = to_chat_messages(conversation)
    assert sent[2] == {"role": "assistant", "content": "Called tool `ls` with arguments `{}`."}
    assert sent[3] == {"role": "user", "content": "Tool result:\n\na.txt"}


def test_parse_reply_splits_text_and_fences():
    reply = (
        "## Plan\n\nFirst:\n\n"
        "```bash name=list.sh timeout=5 norun\nls -la\n```\n"
        "Then:\n"
        "   ~~~python\n   print('```')\n   ~~~\n"
        "````markdown\n```bash\nnested\n```\n````\n"
        "```sh\nunclosed\n"
    )
    blocks = parse_reply(reply)
    assert blocks == [
        TextBlock(value="## Plan\n\nFirst:", quoted=True),
        CodeBlock(
            language="bash", name="list.sh", code="ls -la", attrs={"timeout": "5"}, flags=["norun"]
        ),
        TextBlock(value="Then:", quoted=True),
        CodeBlock(language="python", code="print('```')"),
        CodeBlock(language="markdown", code="```bash\nnested\n```"),
        CodeBlock(language="sh", code="unclosed"),
    ]
    assert parse_reply("") == [] and parse_reply("no code") == [
        TextBlock(value="no code", quoted=True)
    ]


def test_a_rendered_code_block_parses_back_to_itself():
    block = CodeBlock(
        language="python", name="x.py", code="s = '```'\nprint(s)", attrs={"k": "v"}, flags=["run"]
    )
    assert parse_reply(render_code(block)) == [block]
    spaced = CodeBlock(language="bash", name="my script.sh", code="ls", attrs={"note": "it's"})
    assert render_code(spaced).startswith("```bash name='my script.sh' note='it'\"'\"'s'\n")
    assert parse_reply(render_code(spaced)) == [spaced]
    odd = CodeBlock(language="bash", code="echo", attrs={"title": "`x`"})
    assert render_code(odd).startswith("~~~bash")
    assert parse_reply(render_code(odd)) == [odd]


def test_the_key_ignores_base_url_and_follows_the_request():
    messages = [{"role": "user", "content": "hi"}]
    a = provider_for(ModelSettings(name="m", base_url="http://a/v1", temperature=0), {})
    b = provider_for(ModelSettings(name="m", base_url="http://b/v1", temperature=0), {})
    c = provider_for(ModelSettings(name="m", temperature=0.5), {})
    key = request_key(canonical_request(a, messages))
    assert key == request_key(canonical_request(b, messages))
    assert key != request_key(canonical_request(c, messages))
    assert key != request_key(canonical_request(a, [{"role": "user", "content": "hi!"}]))
