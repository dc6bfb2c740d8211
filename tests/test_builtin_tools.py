"""The built-in tools (files, commands, diffs, attempt_completion) and the older documents.

The model is the loopback server (tests/chat_server.py) through the real ``openai``
client; it scripts the calls. The sandbox is the local shell (and Docker, with the
python3-minimal test image, when it is there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domarkx.data.models import NOT_RUN_BY_CONFIG
from domarkx.session.legacy import changes_of, migrate_text
from tests.chat_server import ChatServer, Response
from tests.support import domarkx, new_project
from tests.tool_support import OLDER, tool_results

ENV = {"DOMARKX_LLM": None, "DOMARKX_LLM_RETRIES": "0", "DOMARKX_TRUST": "1"}
TOOLS = ["read_file", "write_to_file", "list_files", "apply_diff", "execute_command"]


def session(base_url: str, tools: list[str], engine: str = "local_shell") -> str:
    return (
        "---\ntitle: Files\n---\n\n```yaml session-config\n"
        f"engine: {engine}\ntimeout: 30\n"
        f"model: {{provider: openai, name: m, base_url: {base_url}, max_turns: 8}}\n"
        f"tools: {json.dumps(tools)}\n```\n\n## user\n\n> Fix the greeting.\n"
    )


def test_the_file_tools_and_a_diff_that_does_not_apply(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = new_project(tmp_path, {"domarkx.toml": 'approve = "auto"\n'})
        (root / "sessions" / "f.md").write_text(
            session(server.base_url, [*TOOLS, "attempt_completion"]), encoding="utf-8"
        )
        server.call(("write_to_file", {"path": "work/hello.txt", "content": "helo\nworld\n"}))
        server.call(("list_files", {"path": "work"}), ("read_file", {"path": "work/hello.txt"}))
        bad = "@@ -1,1 +1,1 @@\n-nothing like this\n+hello\n"
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": bad}))
        good = "@@ -1,2 +1,2 @@\n-helo\n+hello\n world\n"
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": good}))
        older = "<<<<<<< SEARCH\n:start_line:2\n-------\nworld\n=======\nthere\n>>>>>>> REPLACE\n"
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": older}))
        server.call(("execute_command", {"command": "cat work/hello.txt"}))
        server.call(("attempt_completion", {"result": "The greeting is fixed."}))
        done = domarkx(root, "chat", "sessions/f.md", env=ENV)
        assert done.code == 0, done.err
        text = (root / "sessions" / "f.md").read_text(encoding="utf-8")
        results = tool_results(text)
        assert results[0].startswith("> wrote 11 characters")
        assert results[1] == "> hello.txt"
        assert results[2] == "> helo\n> world"
        assert "hunk 1 (line 1) does not apply" in results[3]  # an error result...
        assert '"is_error": true' in text.split("## tool")[4]
        assert "applied 1 hunk" in results[4]  # ...and the file was left as it was
        assert "applied 1 hunk" in results[5]
        assert "hello" in results[6] and "there" in results[6]
        assert results[7] == "> The greeting is fixed."
        # attempt_completion ended the loop: no request after it.
        assert len(server.requests) == 7
        assert text.rstrip().endswith("> The greeting is fixed.")


def test_file_tools_need_approval_on_this_machine(tmp_path: Path) -> None:
    with ChatServer() as server:
        root = new_project(tmp_path, {"domarkx.toml": 'approve = "never"\n'})
        (root / "sessions" / "f.md").write_text(session(server.base_url, TOOLS), encoding="utf-8")
        server.call(("write_to_file", {"path": "x.txt", "content": "x"}))
        server.call(("execute_command", {"command": "touch y.txt"}))
        server.reply("I could not write it.")
        done = domarkx(root, "chat", "sessions/f.md", env=ENV)
        assert done.code == 0, done.err
        assert not list(root.rglob("x.txt")) and not list(root.rglob("y.txt"))
        # Both results say the configuration refused, not that the user did.
        results = tool_results((root / "sessions" / "f.md").read_text())
        assert results[:2] == [f"> {NOT_RUN_BY_CONFIG}"] * 2
        # What the model was told, in the request after each call.
        sent = [m for m in server.requests[-1]["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in sent] == [NOT_RUN_BY_CONFIG] * 2


def test_migrate_converts_the_conversation_layout_and_says_what_it_changed(
    tmp_path: Path,
) -> None:
    text = (OLDER / "default-464a302.md").read_text(encoding="utf-8")
    assert changes_of(text) == [
        "the setup script's model `client` -> session-config `model`",
        "`## Conversation` -> 1 message (`## role`)",
    ]
    migrated = migrate_text(text)
    assert "## Conversation" not in migrated and "**User**" not in migrated
    assert migrated.rstrip().endswith("## user\n\n> [@user_prompt](domarkx://user_prompt)")
    root = new_project(tmp_path, {})
    shutil.copyfile(OLDER / "default-6db9de6.md", root / "sessions" / "d.md")
    done = domarkx(root, "migrate", "sessions/d.md", env=ENV)
    assert done.code == 0, done.err
    assert "migrated `## Conversation` -> 1 message" in done.err
    imported = domarkx(root, "import", "sessions/d.md", "--param", "user_prompt=Hi", env=ENV)
    assert imported.code == 0, imported.err


def with_model(text: str, base_url: str) -> str:
    """The document with its JSON session-config's model set to the loopback server."""
    start = text.index("```json session-config\n") + len("```json session-config\n")
    end = text.index("```", start)
    config = json.loads(text[start:end])
    config["model"] = {"provider": "openai", "name": "m", "base_url": base_url}
    return text[:start] + json.dumps(config, indent=2) + "\n" + text[end:]


@pytest.mark.parametrize(
    ("name", "question"),
    [
        # tools = [get_tool("tool_execute_command")], an answered call: a new question.
        ("portable_tool_local_call-e6f3b55.md", True),
        # ToolWrapper, JupyterToolExecutor, autogen_core names; a call left to run.
        ("setup_script_class_tool_remote_call-1bab6c4.md", False),
        # tool_execute_command through the registry; a call left to run (on this machine).
        ("portable_tool_remote_call-7a76f36.md", False),
        # session_management's tools (list_sessions runs on the host).
        ("tool_call_example-ce55040.md", True),
    ],
)
def test_older_documents_run_to_the_end_after_migrate(
    tmp_path: Path, name: str, question: bool
) -> None:
    with ChatServer() as server:
        server.default = Response(text="Done.")
        root = new_project(tmp_path, {"domarkx.toml": 'approve = "auto"\n'})
        target = root / "sessions" / "old.md"
        shutil.copyfile(OLDER / name, target)
        assert domarkx(root, "migrate", "sessions/old.md", env=ENV).code == 0
        text = with_model(target.read_text(encoding="utf-8"), server.base_url)
        target.write_text(text + ("\n## user\n\n> Once more.\n" if question else ""))
        done = domarkx(root, "chat", "sessions/old.md", env=ENV)
        assert done.code == 0, done.err
        after = target.read_text(encoding="utf-8")
        assert after.rstrip().endswith("> Done.")
        if not question:  # the call the document left ran in the sandbox
            result = after[len(text) :].split("## tool", 1)[1].split("## assistant")[0]
            assert '"is_error"' not in result and ("> 4" in result or "> " in result)


FUNCTION_TOOL = """---
title: Older tools
---

```json session-config
{"type": "AssistantAgentState"}
```

```python setup-script
import os
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient

client = OpenAIChatCompletionClient(model="m", base_url="BASE")


def shout(text: str) -> str:
    return text.upper() + "!"


def whisper(text: str) -> str:
    \"\"\"Lower-case a text.\"\"\"
    return text.lower()


tools = [FunctionTool(shout, description="Upper-case a text."), FunctionTool(whisper)]
```

## user

> Shout hello.
"""


def test_migrate_makes_function_tools_plain_functions_that_the_model_calls(
    tmp_path: Path,
) -> None:
    with ChatServer() as server:
        root = new_project(tmp_path, {"domarkx.toml": 'approve = "auto"\n'})
        target = root / "sessions" / "old.md"
        target.write_text(FUNCTION_TOOL.replace("BASE", server.base_url), encoding="utf-8")
        done = domarkx(root, "migrate", "sessions/old.md", env=ENV)
        assert done.code == 0, done.err
        assert "migrated `FunctionTool(f)` -> `f` (2 tools)" in done.err
        text = target.read_text(encoding="utf-8")
        assert "tools = [shout, whisper]" in text and "FunctionTool" not in text
        assert '    """Upper-case a text."""\n    return text.upper()' in text
        server.call(("shout", {"text": "hello"}))
        server.reply("HELLO!")
        chat = domarkx(root, "chat", "sessions/old.md", env=ENV)
        assert chat.code == 0, chat.err
        offered = {t["function"]["name"]: t["function"] for t in server.requests[0]["tools"]}
        assert offered["shout"]["description"] == "Upper-case a text."
        assert offered["whisper"]["description"] == "Lower-case a text."
        assert tool_results(target.read_text(encoding="utf-8")) == ["> HELLO!"]


def test_what_migrate_cannot_convert_is_one_line_each_and_nothing_changes(
    tmp_path: Path,
) -> None:
    broken = (
        FUNCTION_TOOL.replace("FunctionTool(whisper)", "FunctionTool(lambda t: t)")
        .replace('"""Lower-case a text."""', '"""Quiet."""')
        .replace("import os\n", "import os\nfrom domarkx.tools.magic import wand\n")
    )
    root = new_project(tmp_path, {})
    target = root / "sessions" / "old.md"
    target.write_bytes(broken.encode())
    done = domarkx(root, "migrate", "sessions/old.md", env=ENV)
    assert done.code == 1
    lines = done.err.splitlines()
    # The import's line and the declaration's line, in the document.
    where = [
        i for i, line in enumerate(broken.split("\n"), 1) if "magic" in line or "lambda" in line
    ]
    assert [line.split(":")[3] for line in lines[:-1]] == [str(i) for i in where], done.err
    assert all(line.startswith("domarkx: error: sessions/old.md:") for line in lines[:-1])
    assert "`FunctionTool(lambda t: t)` wraps something other than a function" in done.err
    assert "`domarkx.tools.magic` has no equivalent" in done.err
    assert lines[-1] == "domarkx: sessions/old.md was not changed"
    assert "migrated" not in done.err and "Traceback" not in done.err
    assert target.read_bytes() == broken.encode()
