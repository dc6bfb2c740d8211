"""The built-in tools and an older document's imports in a Docker sandbox.

The sandbox is the python3-minimal test image (bench/docker-image.sh --python):
no ``json`` module, no pip, nothing of domarkx. The model is the loopback server
(tests/chat_server.py) through the real ``openai`` client, scripting the calls.
In Docker a model's code runs without asking, so no approval is configured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.chat_server import ChatServer
from tests.dockerutil import PYTHON_IMAGE, require_image
from tests.support import domarkx, new_project
from tests.tool_support import OLDER, tool_results

pytestmark = pytest.mark.docker

ENV = {"DOMARKX_LLM": None, "DOMARKX_LLM_RETRIES": "0", "DOMARKX_TRUST": "1"}
TOOLS = [
    "read_file",
    "write_to_file",
    "list_files",
    "apply_diff",
    "execute_command",
    "attempt_completion",
]


def docker_session(base_url: str, image: str, tools: list[str]) -> str:
    return (
        "---\ntitle: Files in Docker\n---\n\n```yaml session-config\n"
        f"engine: docker\nimage: {image}\nworkdir: /work\ntimeout: 60\n"
        f"model: {{provider: openai, name: m, base_url: {base_url}, max_turns: 12}}\n"
        f"tools: {json.dumps(tools)}\n```\n\n## user\n\n> Fix the greeting.\n"
    )


def test_every_sandbox_tool_runs_in_a_python3_minimal_container(tmp_path: Path) -> None:
    image = require_image(PYTHON_IMAGE)
    with ChatServer() as server:
        root = new_project(tmp_path, {})
        (root / "sessions" / "f.md").write_text(
            docker_session(server.base_url, image, TOOLS), encoding="utf-8"
        )
        server.call(("write_to_file", {"path": "work/hello.txt", "content": "helo\nworld\n"}))
        server.call(("write_to_file", {"path": "work/hello.txt", "content": "!\n", "append": True}))
        server.call(("list_files", {"path": ".", "recursive": True}))
        server.call(("read_file", {"path": "work/hello.txt", "start_line": 2, "end_line": 3}))
        bad = "@@ -1,1 +1,1 @@\n-nothing like this\n+hello\n"
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": bad}))
        good = (
            "--- a/work/hello.txt\n+++ b/work/hello.txt\n@@ -1,2 +1,2 @@\n-helo\n+hello\n world\n"
        )
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": good}))
        older = "<<<<<<< SEARCH\n:start_line:2\n-------\nworld\n=======\nthere\n>>>>>>> REPLACE\n"
        server.call(("apply_diff", {"path": "work/hello.txt", "diff": older}))
        server.call(("read_file", {"path": "work/missing.txt"}))
        server.call(("execute_command", {"command": "cat work/hello.txt; ls /usr/lib/python3*"}))
        server.call(("execute_command", {"command": "exit 3"}))
        server.call(("attempt_completion", {"result": "The greeting is fixed."}))
        done = domarkx(root, "chat", "sessions/f.md", env=ENV)
        assert done.code == 0, done.err
        text = (root / "sessions" / "f.md").read_text(encoding="utf-8")
        results = tool_results(text)
        errors = ['"is_error": true' in part for part in text.split("## tool")[1:]]
        assert results[0] == "> wrote 11 characters to work/hello.txt"
        assert results[1] == "> appended 2 characters to work/hello.txt"
        assert results[2] == "> work/\n> work/hello.txt"
        assert results[3] == "> world\n> !"
        assert "hunk 1 (line 1) does not apply" in results[4] and errors[4]
        assert results[5] == "> applied 1 hunk to work/hello.txt"  # the file was left as it was
        assert results[6] == "> applied 1 hunk to work/hello.txt"
        assert results[7] == "> no such file: work/missing.txt" and errors[7]
        # The command ran in the container: its own Python, which has no json module.
        assert "hello\n> there\n> !" in results[8] and not errors[8]
        assert "json" not in results[8].split("!", 1)[1]
        assert "exit code 3" in results[9] and errors[9]
        assert results[10] == "> The greeting is fixed."
        assert errors == [i in (4, 7, 9) for i in range(11)]
        assert len(server.requests) == 11  # attempt_completion ended the loop
        # The files are the container's: nothing was written on this machine.
        assert not list(root.rglob("hello.txt"))


def with_docker_model(text: str, base_url: str, image: str) -> str:
    """The document with its JSON session-config set to Docker and the loopback server."""
    start = text.index("```json session-config\n") + len("```json session-config\n")
    end = text.index("```", start)
    config = json.loads(text[start:end])
    config.update(
        engine="docker",
        image=image,
        timeout=60,
        model={"provider": "openai", "name": "m", "base_url": base_url},
    )
    return text[:start] + json.dumps(config, indent=2) + "\n" + text[end:]


@pytest.mark.parametrize(
    ("name", "call", "printed"),
    [
        # tools = [get_tool("tool_execute_command")] through the older tool registry.
        (
            "portable_tool_local_call-e6f3b55.md",
            ("tool_execute_command", {"command": "echo older-$((6*7))"}),
            "older-42",
        ),
        # ToolWrapper(tool_func=MyTool().add), JupyterToolExecutor, autogen_core names,
        # unittest.mock: the method of the setup script's class is the tool.
        ("setup_script_class_tool_remote_call-1bab6c4.md", ("add", {"a": 20, "b": 22}), "42"),
    ],
)
def test_an_older_setup_script_runs_unchanged_in_a_container(
    tmp_path: Path, name: str, call: tuple[str, dict[str, object]], printed: str
) -> None:
    image = require_image(PYTHON_IMAGE)
    with ChatServer() as server:
        root = new_project(tmp_path, {})
        target = root / "sessions" / "old.md"
        shutil.copyfile(OLDER / name, target)
        assert domarkx(root, "migrate", "sessions/old.md", env=ENV).code == 0
        text = with_docker_model(target.read_text(encoding="utf-8"), server.base_url, image)
        target.write_text(text + "\n## user\n\n> Once more, with your tool.\n")
        server.call(call)
        server.reply(f"It gave {printed}.")
        done = domarkx(root, "chat", "sessions/old.md", env=ENV)
        assert done.code == 0, done.err
        after = target.read_text(encoding="utf-8")
        result = after[len(text) :].split("## tool", 1)[1].split("## assistant")[0]
        assert f"> {printed}" in result and '"is_error"' not in result
        assert after.rstrip().endswith(f"> It gave {printed}.")
