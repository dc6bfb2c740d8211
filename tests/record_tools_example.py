"""Record the model replies of sessions/tools.md with the loopback chat-completions server.

    .venv/bin/python tests/record_tools_example.py

serves the scripted replies below on 127.0.0.1:8765 (the session's `base_url`) and builds the
session with DOMARKX_LLM=record, which writes .domarkx/replay/ records to commit. The replies
stand for what a real model answers; record against one by pointing `base_url` at it instead.
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


def main() -> int:
    server = ChatServer(port=PORT)
    server.call(
        ("to_fahrenheit", {"celsius": 21.5}),
        ("count_words", {"text": "The quick brown fox jumps over the lazy dog", "min_length": 4}),
        reasoning="Two questions: a conversion and a count. Both have a tool; call both.",
        usage={"prompt_tokens": 214, "completion_tokens": 58},
    )
    server.queue.append(
        Response(
            text="21.5 °C is **70.7 °F**, and the sentence has **5** words of at least four "
            'letters ("quick", "brown", "jumps", "over", "lazy").',
            usage={"prompt_tokens": 301, "completion_tokens": 36},
        )
    )
    env = {**os.environ, "DOMARKX_LLM": "record"}
    root = HERE.parent
    with server:
        subprocess.run(
            [sys.executable, "-m", "doit", "forget", "run:tools"], cwd=root, env=env, check=False
        )
        done = subprocess.run([sys.executable, "-m", "doit", "export:tools"], cwd=root, env=env)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
