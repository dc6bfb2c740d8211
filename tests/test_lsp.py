"""``domarkx lsp`` through a real LSP client: JSON-RPC over the server process's stdio.

The client below is a small one of the test's own (Content-Length framing, a
reader thread): it opens documents, edits them, asks for hovers, completions,
lenses and definitions, runs lens commands, and answers the server's own
requests (``window/showMessageRequest``) as a user would. The model is the
loopback chat-completions server (tests/chat_server.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from domarkx.data.models import NOT_RUN
from tests.chat_server import ChatServer

WAIT = 60.0  # seconds: a bound for a stuck server, not a speed requirement


class LspClient:
    """One ``domarkx lsp`` process and the messages it sent."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, "-m", "domarkx", "lsp"],
            cwd=root,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.next_id = 0
        self.responses: dict[int, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.server_requests: list[dict[str, Any]] = []
        # What the user answers to window/showMessageRequest (an action's title, or None).
        self.answer: str | None = None
        self.changed = threading.Condition()
        self.versions: dict[str, int] = {}
        self.capabilities: dict[str, Any] = {}
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    # --- the wire ------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    with self.changed:
                        self.changed.notify_all()
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None, "a message without Content-Length"
            message = json.loads(stream.read(length))
            if "method" in message and "id" in message:
                self._answer_request(message)
            with self.changed:
                if "method" not in message:
                    self.responses[message["id"]] = message
                elif "id" not in message:
                    self.notifications.append(message)
                self.changed.notify_all()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def _answer_request(self, message: dict[str, Any]) -> None:
        self.server_requests.append(message)
        result: Any = None
        if message["method"] == "window/showMessageRequest":
            titles = [a["title"] for a in message["params"].get("actions") or []]
            result = {"title": self.answer} if self.answer in titles else None
        elif message["method"] == "window/showDocument":
            result = {"success": True}
        self._send({"id": message["id"], "result": result})

    def wait(self, found: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT
        with self.changed:
            while True:
                value = found()
                if value:
                    return value
                if time.monotonic() > deadline or self.process.poll() is not None:
                    err = b"".join(self.stderr).decode(errors="replace")[-3000:]
                    raise AssertionError(f"no {what}; server stderr:\n{err}")
                self.changed.wait(0.5)

    def request(self, method: str, params: Any) -> Any:
        self.next_id += 1
        ident = self.next_id
        self._send({"id": ident, "method": method, "params": params})
        response = self.wait(lambda: self.responses.get(ident), f"response to {method}")
        assert "error" not in response, response["error"]
        return response["result"]

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    # --- the editor ------------------------------------------------------------------------
    def initialize(self) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": self.root.as_uri(),
                "capabilities": {
                    "window": {"showDocument": {"support": True}},
                    "textDocument": {"publishDiagnostics": {"versionSupport": True}},
                },
            },
        )
        self.notify("initialized", {})
        self.capabilities = result["capabilities"]
        return result  # type: ignore[no-any-return]

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.versions[uri] = 1
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": "markdown",
                    "version": 1,
                    "text": path.read_text(encoding="utf-8") if text is None else text,
                }
            },
        )
        return uri

    def replace(self, uri: str, text: str) -> None:
        self.versions[uri] += 1
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self.versions[uri]},
                "contentChanges": [{"text": text}],
            },
        )

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        """The diagnostics published for the document's current version."""

        def published() -> list[dict[str, Any]] | None:
            for note in reversed(self.notifications):
                params = note["params"]
                if (
                    note["method"] == "textDocument/publishDiagnostics"
                    and params["uri"] == uri
                    and params.get("version") == self.versions[uri]
                ):
                    return [params["diagnostics"]]
            return None

        result: list[list[dict[str, Any]]] = self.wait(published, f"diagnostics of {uri}")
        return result[0]

    def logged(self) -> str:
        return "\n".join(
            n["params"]["message"] for n in self.notifications if n["method"] == "window/logMessage"
        )

    def at(self, uri: str, line: int, character: int) -> dict[str, Any]:
        return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.request("shutdown", None)
            self.notify("exit", None)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def lsp_client(project) -> Iterator[Callable[..., LspClient]]:
    clients: list[LspClient] = []

    def start(env: dict[str, str] | None = None) -> LspClient:
        client = LspClient(project(), env)
        clients.append(client)
        client.initialize()
        return client

    yield start
    for client in clients:
        client.close()


SESSION = """\
---
title: Tour
params:
  who: Ana
---

```yaml session-config
engine: local_shell
timeout: 10
```

## system

> Rules: [@rules](domarkx://include?path=_partials/rules.md)

## user

> Hello, [@who](domarkx://who)!

## assistant

```json msg-metadata
{"provider": "openai", "model": "m-1", "usage": {"prompt_tokens": 12, "completion_tokens": 34}}
```

> Hi.
"""

RULES = "Answer in one sentence.\nBe kind.\n"


def lines_of(text: str, needle: str) -> int:
    """The 0-based line of the first line holding ``needle``."""
    return next(i for i, line in enumerate(text.split("\n")) if needle in line)


def test_diagnostics_appear_at_the_cli_line_and_clear_when_fixed(project, lsp_client):
    root = project({"sessions/tour.md": SESSION, "sessions/_partials/rules.md": RULES})
    client = lsp_client()
    assert "codeLensProvider" in client.capabilities
    assert client.capabilities["executeCommandProvider"]["commands"] == [
        "domarkx.answer",
        "domarkx.regenerate",
        "domarkx.fork",
        "domarkx.run",
    ]
    uri = client.open(root / "sessions" / "tour.md")
    assert client.diagnostics(uri) == []

    # An unknown role heading: the CLI names the heading's line.
    broken = SESSION.replace("## user", "## narrator")
    client.replace(uri, broken)
    [diagnostic] = client.diagnostics(uri)
    assert diagnostic["range"]["start"]["line"] == lines_of(broken, "## narrator")
    assert "unknown role heading `## narrator`" in diagnostic["message"]
    assert "valid roles" in diagnostic["message"]  # the CLI's hint
    assert diagnostic["source"] == "domarkx" and diagnostic["severity"] == 1

    # The same document as the CLI sees it, saved: the same message at the same line.
    (root / "sessions" / "tour.md").write_text(broken, encoding="utf-8")
    cli = subprocess.run(
        [sys.executable, "-m", "domarkx", "import", "sessions/tour.md"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1
    assert f"sessions/tour.md:{lines_of(broken, '## narrator') + 1}: unknown role" in cli.stderr

    client.replace(uri, SESSION)
    assert client.diagnostics(uri) == []

    # An include that leaves the project, an unknown parameter, a bad config value,
    # a network the configuration does not grant, more model calls than its ceiling: each at
    # the line the CLI names.
    cases = [
        ("_partials/rules.md", "../../../etc/passwd", "leaves the project folder", "[@rules]"),
        ("domarkx://who", "domarkx://whom", "whom", "[@who]"),
        ("timeout: 10", "timeout: -1", "timeout", "```yaml session-config"),
        ("engine: local_shell", "engine: dokker", "unknown engine 'dokker'", "engine:"),
        (
            "engine: local_shell",
            "engine: docker\nimage: busybox\nnetwork: bridge",
            "network",
            "network:",
        ),
        (
            "timeout: 10",
            "model: {name: m, base_url: 'http://127.0.0.1:9/v1', max_turns: 1000000}",
            "past the project's ceiling of 50",
            "max_turns",
        ),
    ]
    for old, new, message, line_text in cases:
        text = SESSION.replace(old, new)
        client.replace(uri, text)
        diagnostics = client.diagnostics(uri)
        assert len(diagnostics) == 1, (new, diagnostics)
        assert message in diagnostics[0]["message"], (new, diagnostics)
        assert diagnostics[0]["range"]["start"]["line"] == lines_of(text, line_text), new
    client.replace(uri, SESSION)
    assert client.diagnostics(uri) == []

    # An error inside an included file: at the include macro, naming the file and line.
    (root / "sessions" / "_partials" / "rules.md").write_text(
        "Be [@x](domarkx://nothing).\n", encoding="utf-8"
    )
    client.replace(uri, SESSION + "\n")
    [diagnostic] = client.diagnostics(uri)
    assert diagnostic["range"]["start"]["line"] == lines_of(SESSION, "[@rules]")
    assert diagnostic["message"].startswith("sessions/_partials/rules.md:1: ")
    [related] = diagnostic["relatedInformation"]
    assert related["location"]["uri"] == (root / "sessions/_partials/rules.md").as_uri()


def test_hover_completion_and_definition(project, lsp_client):
    root = project(
        {
            "sessions/tour.md": SESSION,
            "sessions/_partials/rules.md": RULES,
            "domarkx.toml": '[endpoints.local]\nbase_url = "http://127.0.0.1:9/v1"\n',
        }
    )
    client = lsp_client()
    uri = client.open(root / "sessions" / "tour.md")

    # Hover on an include: the included file's first lines.
    line = lines_of(SESSION, "[@rules]")
    hover = client.request("textDocument/hover", client.at(uri, line, 12))
    assert "sessions/_partials/rules.md" in hover["contents"]["value"]
    assert "Answer in one sentence.\nBe kind." in hover["contents"]["value"]
    assert hover["range"]["start"] == {"line": line, "character": 9}
    # On a parameter: its value from the front matter.
    line = lines_of(SESSION, "[@who]")
    hover = client.request("textDocument/hover", client.at(uri, line, 12))
    assert "`who` = `Ana`" in hover["contents"]["value"]
    # On a msg-metadata block: model, usage and latency in one line.
    line = lines_of(SESSION, '"usage"')
    hover = client.request("textDocument/hover", client.at(uri, line, 3))
    summary = hover["contents"]["value"]
    assert "\n" not in summary
    assert "m-1 (openai)" in summary and "12 prompt + 34 completion" in summary
    assert "latency" in summary
    # Plain text: nothing.
    assert client.request("textDocument/hover", client.at(uri, 1, 2)) is None

    # Go to definition on the include: the included file.
    line = lines_of(SESSION, "[@rules]")
    location = client.request("textDocument/definition", client.at(uri, line, 30))
    assert location["uri"] == (root / "sessions/_partials/rules.md").as_uri()

    def labels(text: str, line: int, character: int) -> list[str]:
        client.replace(uri, text)
        result = client.request("textDocument/completion", client.at(uri, line, character))
        return [item["label"] for item in result["items"]]

    # A role after `## `.
    text = SESSION + "\n## \n"
    line = len(text.split("\n")) - 2
    assert {"user", "assistant", "system", "tool"} <= set(labels(text, line, 3))
    # A session-config key, a model key, an endpoint name from domarkx.toml.
    config = "timeout: 10\n"
    text = SESSION.replace(config, config + "on\n")
    line = lines_of(text, "timeout: 10") + 1
    assert {"on_error", "engine", "model", "network"} <= set(labels(text, line, 2))
    text = SESSION.replace(config, config + "model:\n  end\n")
    assert "endpoint" in labels(text, lines_of(text, "  end"), 5)
    assert "timeout" not in labels(text, lines_of(text, "  end"), 5)
    text = SESSION.replace(config, config + "model:\n  endpoint: \n")
    assert labels(text, lines_of(text, "endpoint:"), 12) == ["local"]
    # Include paths, relative to the document's folder.
    text = SESSION + "\n[@x](domarkx://include?path=_partials/\n"
    line = len(text.split("\n")) - 2
    assert labels(text, line, len(text.split("\n")[line])) == ["_partials/rules.md"]
    text = SESSION + "\n[@x](domarkx://include?path=\n"
    assert "_partials/" in labels(text, line, len(text.split("\n")[line]))


def test_fork_lens_writes_the_new_session(project, lsp_client):
    root = project({"sessions/tour.md": SESSION, "sessions/_partials/rules.md": RULES})
    client = lsp_client()
    uri = client.open(root / "sessions" / "tour.md")
    lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    titles = [(lens["range"]["start"]["line"], lens["command"]["title"]) for lens in lenses]
    assert (0, "Run") in titles
    assert [t for t in titles if t[1] == "Fork here"] == [
        (lines_of(SESSION, f"## {role}"), "Fork here") for role in ("system", "user", "assistant")
    ]
    assert (lines_of(SESSION, "## assistant"), "Regenerate") in titles
    assert "Answer" not in [t[1] for t in titles]  # the document ends with the reply

    [fork] = [
        lens["command"]
        for lens in lenses
        if lens["command"]["title"] == "Fork here"
        and lens["range"]["start"]["line"] == lines_of(SESSION, "## user")
    ]
    result = client.request(
        "workspace/executeCommand", {"command": fork["command"], "arguments": fork["arguments"]}
    )
    new = root / "sessions" / "tour-fork-2.md"
    assert result["file"] == str(new)
    assert new.read_text(encoding="utf-8") == SESSION[: SESSION.index("\n\n## assistant")] + "\n"
    assert "forked sessions/tour.md into sessions/tour-fork-2.md" in client.wait(
        client.logged, "log"
    )
    assert any(r["method"] == "window/showDocument" for r in client.server_requests)
    # The fork ends with the user message: its lens is Answer.
    uri = client.open(new)
    lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    assert "Answer" in [lens["command"]["title"] for lens in lenses]

    # A document with unsaved edits is not forked: the command works on the file.
    client.replace(client.open(root / "sessions" / "tour.md"), SESSION + "\nmore\n")
    result = client.request("workspace/executeCommand", fork)
    assert "unsaved changes" in result["error"]
    assert not (root / "sessions" / "tour-fork-2-2.md").exists()


QUESTION = """\
```yaml session-config
timeout: 10
model:
  endpoint: test
  name: test-model
  max_turns: 2
```

## user

> How many lines does `printf 'a\\nb\\n'` print?
"""


def test_answer_lens_asks_before_running_the_models_code(project, lsp_client):
    with ChatServer() as server:
        root = project(
            {
                "domarkx.toml": f'[endpoints.test]\nbase_url = "{server.base_url}"\n'
                'api_key_env = "DOMARKX_TEST_KEY"\n',
                "sessions/q.md": QUESTION,
            }
        )
        server.reply("Let me count.\n\n```bash\nprintf 'a\\nb\\n' | wc -l\n```", "Two lines.")
        client = lsp_client({"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM": "auto"})
        uri = client.open(root / "sessions" / "q.md")
        assert client.diagnostics(uri) == []
        lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
        [answer] = [lens["command"] for lens in lenses if lens["command"]["title"] == "Answer"]

        client.answer = "Don't run"  # the user refuses the model's code
        result = client.request("workspace/executeCommand", answer)
        assert "error" not in result, result
        assert result["message"] == "appended 2 messages to sessions/q.md"
        [question] = [
            r for r in client.server_requests if r["method"] == "window/showMessageRequest"
        ]
        assert "printf 'a\\nb\\n' | wc -l" in question["params"]["message"]
        text = (root / "sessions" / "q.md").read_text(encoding="utf-8")
        assert text.startswith(QUESTION)
        assert "> Let me count." in text and NOT_RUN in text and "> Two lines." in text
        logged = client.logged()
        assert "Let me count." in logged and "Two lines." in logged
        assert "appended 2 messages to sessions/q.md" in logged
        # The model was told the code did not run.
        assert NOT_RUN in json.dumps(server.requests[1]["messages"])

        # The editor reloads the file; the reply's first message now has Regenerate.
        client.replace(uri, text)
        lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
        [regenerate] = [
            (lens["range"]["start"]["line"], lens["command"])
            for lens in lenses
            if lens["command"]["title"] == "Regenerate"
        ]
        assert regenerate[0] == lines_of(text, "## assistant")
        server.reply("It prints two lines.")
        result = client.request("workspace/executeCommand", regenerate[1])
        assert result["message"] == "replaced the last answer in sessions/q.md with 1 message", (
            result
        )
        after = (root / "sessions" / "q.md").read_text(encoding="utf-8")
        assert after.startswith(QUESTION) and after.count("## assistant") == 1
        assert "> It prints two lines." in after and "Let me count." not in after


def test_other_commands_do_not_load_pygls_and_a_missing_pygls_is_one_error(tmp_path):
    probe = (
        "import sys\n"
        "from domarkx.cli.main import build_parser\n"
        "build_parser().parse_args(['lsp'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

    # Without the extra installed: one error that says what to install.
    fake = tmp_path / "pygls"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pygls'\", name='pygls')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "domarkx", "lsp"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert "needs the package pygls" in done.stderr and "domarkx[lsp]" in done.stderr
    assert "Traceback" not in done.stderr


RUN_SESSION = """\
## user

> List it.

## assistant

```bash
echo ran-by-the-lens
```
"""


def test_run_lens_imports_and_runs_the_session(project, lsp_client):
    root = project({"sessions/r.md": RUN_SESSION})
    client = lsp_client()
    uri = client.open(root / "sessions" / "r.md")
    lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    [run] = [lens["command"] for lens in lenses if lens["command"]["title"] == "Run"]
    result = client.request("workspace/executeCommand", run)
    assert "error" not in result, result
    [instance] = os.listdir(root / ".domarkx" / "instances")
    assert result["message"] == (
        f"instance {instance[:12]}: exited; `domarkx export {instance[:12]}` shows it"
    )
    logged = client.logged()
    assert "imported sessions/r.md as snapshot" in logged
    assert "[stdout] ran-by-the-lens" in logged

    # A command without its document (an editor's own command palette): one error.
    result = client.request("workspace/executeCommand", {"command": "domarkx.run"})
    assert "needs the document's URI" in result["error"]
