"""Record the model replies of sessions/agents.md (manager and worker) with the loopback server.

    .venv/bin/python tests/record_agents_example.py

serves the scripted replies below on 127.0.0.1:8765 (both sessions' `base_url`), in the
order the build asks for them: the manager's two tool calls, the worker's answer (asked for
inside `send_message`), the manager's report. It builds the session with DOMARKX_LLM=record,
which writes .domarkx/replay/ records to commit. The replies stand for what a real model
answers; record against one by pointing `base_url` at it instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the package tests is beside it

from tests.chat_server import ChatServer, Response  # noqa: E402

PORT = 8765
FIXED = "They're going to the library tomorrow."


def main() -> int:
    server = ChatServer(port=PORT)
    server.call(
        (
            "create_session",
            {
                "template_name": "proofreader",
                "session_name": "proofreader-1",
                "parameters": {"focus": "spelling and grammar"},
            },
        ),
        usage={"prompt_tokens": 402, "completion_tokens": 41},
    )
    server.call(
        (
            "send_message",
            {
                "session_name": "proofreader-1",
                "message": 'Please correct: "Their going to the libary tomorow."',
            },
        ),
        usage={"prompt_tokens": 455, "completion_tokens": 38},
    )
    server.queue.append(  # the worker, inside send_message
        Response(
            text=f'"{FIXED}"\n\nChanged: Their -> They\'re, libary -> library, '
            "tomorow -> tomorrow.",
            usage={"prompt_tokens": 88, "completion_tokens": 30},
        )
    )
    server.queue.append(
        Response(
            text=f'The proofreader (session `proofreader-1`) corrected it to: "{FIXED}" '
            "(three fixes: They're, library, tomorrow).",
            usage={"prompt_tokens": 530, "completion_tokens": 33},
        )
    )
    env = {**os.environ, "DOMARKX_LLM": "record"}
    root = HERE.parent
    with server:
        subprocess.run(
            [sys.executable, "-m", "doit", "forget", "run:agents"], cwd=root, env=env, check=False
        )
        done = subprocess.run([sys.executable, "-m", "doit", "export:agents"], cwd=root, env=env)
    if server.queue:
        print(f"record_agents_example: {len(server.queue)} replies were not asked for")
        return 1
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
