"""Record the model and judge replies of sessions/checks.md with the loopback server.

    .venv/bin/python tests/record_checks_example.py

serves the scripted replies below on 127.0.0.1:8765 (the session's `base_url`, and the
judge's endpoint in domarkx.toml) and builds the session with DOMARKX_LLM=record, which
writes .domarkx/replay/ records to commit: three model calls (a tool call, a code block,
the JSON answer), then the judge's verdict. The replies stand for what a real model
answers; record against one by pointing `base_url` and the endpoint at it instead.
"""

from __future__ import annotations

import json
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
        ("add", {"a": 2, "b": 2}),
        text="I'll add them with the tool.",
        usage={"prompt_tokens": 122, "completion_tokens": 24},
    )
    server.queue.append(
        Response(
            text="The sum is 4. Saving it:\n\n```bash\necho 4 > sum.txt\n```",
            usage={"prompt_tokens": 171, "completion_tokens": 19},
        )
    )
    server.queue.append(
        Response(text='{"sum": 4}', usage={"prompt_tokens": 215, "completion_tokens": 6})
    )
    verdict = {"pass": True, "reason": 'The final reply is exactly {"sum": 4}, the correct sum.'}
    server.queue.append(
        Response(text=json.dumps(verdict), usage={"prompt_tokens": 260, "completion_tokens": 21})
    )
    env = {**os.environ, "DOMARKX_LLM": "record", "DOMARKX_TRUST": "1", "SOURCE_DATE_EPOCH": "0"}
    root = HERE.parent
    with server:
        subprocess.run(
            [sys.executable, "-m", "doit", "forget", "run:checks"], cwd=root, env=env, check=False
        )
        done = subprocess.run([sys.executable, "-m", "doit", "export:checks"], cwd=root, env=env)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
