"""Only a complete reply is a reply: a broken answer is retried, then one error, never kept.

A real loopback chat-completions server (tests/chat_server.py) answers with
status 200 but breaks its answer: a stream cut before ``finish_reason``, an
event that is not JSON, a JSON body where events were asked for, an HTML page,
a completion without ``finish_reason``. Through the real ``openai`` client,
``domarkx chat`` retries as the client retries, then says so in one line that
names the instance; the document is untouched and nothing is recorded for
replay. A good answer afterwards is appended, and asked again it is replayed
and says so.
"""

from __future__ import annotations

import pytest

from tests.chat_server import FAULTS, ChatServer, Response
from tests.support import domarkx

SESSION = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
```
"""

STREAMED = ("cut", "bad_event", "not_sse", "html")


def make(project, server: ChatServer):
    root = project({"sessions/q.md": SESSION.format(base_url=server.base_url)})
    return root, root / "sessions" / "q.md"


def records(root):
    folder = root / ".domarkx" / "replay"
    return sorted(p.name for p in folder.rglob("*.json")) if folder.exists() else []


@pytest.mark.parametrize("fault", STREAMED)
def test_a_broken_stream_is_retried_then_one_error_and_nothing_is_kept(project, fault):
    with ChatServer() as server:
        root, path = make(project, server)
        before = path.read_bytes()
        for _ in range(2):
            server.queue.append(Response(text="Hello there, friend.", fault=fault))
        code, _out, err = domarkx(
            root, "chat", "sessions/q.md", "-m", "Say hello.", env={"DOMARKX_LLM_RETRIES": "1"}
        )
        assert len(server.requests) == 2  # retried once, as DOMARKX_LLM_RETRIES says
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("domarkx: error:")]
    assert len(errors) == 1
    assert "not kept" in errors[0] and "(tried 2 times)" in errors[0]
    assert "instance " in errors[0] and "keeps your question" in errors[0]
    assert "retrying" in err  # the retry was told
    assert path.read_bytes() == before  # nothing appended
    assert records(root) == []  # nothing recorded for replay


def test_a_completion_without_finish_reason_is_not_a_reply(project, monkeypatch):
    """The non-streamed path (what a provider gives when nobody watches the text)."""
    from domarkx.data.models import ModelSettings
    from domarkx.errors import LLMError
    from domarkx.llm.openai_provider import OpenAIProvider

    monkeypatch.setenv("DOMARKX_LLM_RETRIES", "0")
    with ChatServer() as server:
        settings = ModelSettings(name="test-model", base_url=server.base_url)
        provider = OpenAIProvider(settings)
        for fault in ("no_finish", "html"):
            server.queue.append(Response(text="half", fault=fault))
            with pytest.raises(LLMError) as caught:
                provider.complete([{"role": "user", "content": "hi"}])
            assert "not kept" in caught.value.message
        server.reply("whole")
        assert provider.complete([{"role": "user", "content": "hi"}]).text == "whole"


def test_after_the_faults_a_good_answer_is_kept_and_replayed_says_so(project):
    with ChatServer() as server:
        root, path = make(project, server)
        server.queue.append(Response(text="Hello there.", fault="cut"))
        server.queue.append(Response(text="Hello there."))
        code, out, err = domarkx(
            root, "chat", "sessions/q.md", "-m", "Say hello.", env={"DOMARKX_LLM_RETRIES": "1"}
        )
        assert code == 0, err
        assert "Hello there." in path.read_text()
        assert len(records(root)) == 1
        assert "(replayed)" not in err
        # The same question in another document: the record answers, and says so.
        (root / "sessions" / "r.md").write_text(SESSION.format(base_url=server.base_url))
        code, out, err = domarkx(root, "chat", "sessions/r.md", "-m", "Say hello.")
        assert code == 0, err
        assert len(server.requests) == 2  # nobody was asked again
    assert "(replayed)" in err and "Hello there." in out


def test_every_fault_of_the_server_is_known():
    assert set(STREAMED) | {"no_finish"} == set(FAULTS)
