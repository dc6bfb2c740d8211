"""How many of the older domarkx's session documents import, migrate and run to the end.

The documents are in tests/data/older/: every distinct version (by content) of
the older project's session documents (its tests, examples and templates)
across its git history, named ``<file>-<blob>.md``. They were collected from a
clone of gameltb/dam with

    for p in $(git log --all --format= --name-only -- '*domarkx*' | grep '\\.md$' | sort -u \\
               | grep -E 'templates/default|examples/|tests/function'); do
        for c in $(git log --all --format=%H -- $p); do
            b=$(git rev-parse $c:$p 2>/dev/null) && echo "$b $p"; done; done | sort -u -k1,1

(30 blobs), each written as ``git cat-file -p <blob>``.

For each document, in a fresh project of its own (a ``sessions/`` folder and a
trusted ``domarkx.toml`` that approves model-written code):

1. import: ``domarkx import`` of the document as it is;
2. migrate: ``domarkx migrate`` (exit status 0), then ``domarkx import``;
3. run: the session-config's model is pointed at a chat-completions server on
   127.0.0.1 (tests/chat_server.py) that answers every request "Done." (the only
   edit the bench makes), template parameters get a value (``import --param``),
   and ``domarkx run --yes`` of that snapshot must exit 0 with nothing left to answer: a conversation
   that ended with a question or with tool calls now ends with the answer.

Usage: .venv/bin/python bench/older_documents.py [--engine docker] [-v]
Prints one line per document (import, migrate, run, and the first line of the
reason when a step fails) and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the package tests, for its chat-completions server

from tests.chat_server import ChatServer, Response  # noqa: E402

DOCUMENTS = ROOT / "tests" / "data" / "older"
PARAMS = ["user_prompt=Say hello.", "session_name=hello", "task_description=Greet the user."]
PARAM_ARGS = [arg for value in PARAMS for arg in ("--param", value)]


def domarkx(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOMARKX_TRUST="1", DOMARKX_HOME=str(project / ".home"))
    env.pop("DOMARKX_LLM", None)
    return subprocess.run(
        [sys.executable, "-m", "domarkx", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def reason(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("domarkx: error")]
    return (errors or lines or [f"exit status {done.returncode}"])[0][:160]


def point_at(text: str, base_url: str, engine: str) -> str:
    """The document with its session-config's model (and engine) set for the bench."""
    model = {"provider": "openai", "name": "scripted", "base_url": base_url}
    fence = re.search(r"^```(json|yaml) session-config\n(.*?)^```\n", text, re.S | re.M)
    if fence is None:
        block = f"```yaml session-config\nengine: {engine}\nmodel: {json.dumps(model)}\n```\n\n"
        front = re.match(r"^---\n.*?\n---\n\n?", text, re.S)
        at = front.end() if front else 0
        return text[:at] + block + text[at:]
    if fence.group(1) == "json":
        data = json.loads(fence.group(2) or "{}")
        data["model"], data["engine"] = model, engine
        body = json.dumps(data, indent=2) + "\n"
    else:
        kept = [
            line
            for line in fence.group(2).splitlines()
            if not line.startswith(("model:", "engine:", "  "))
        ]
        body = "\n".join([*kept, f"engine: {engine}", f"model: {json.dumps(model)}"]) + "\n"
    return text[: fence.start(2)] + body + text[fence.end(2) :]


def measure(document: Path, server: ChatServer, engine: str) -> tuple[bool, bool, bool, str]:
    with tempfile.TemporaryDirectory(prefix="older-") as folder:
        project = Path(folder)
        (project / "sessions").mkdir()
        (project / "domarkx.toml").write_text('approve = "auto"\n', encoding="utf-8")
        target = project / "sessions" / document.name
        shutil.copyfile(document, target)
        name = f"sessions/{document.name}"
        imported = domarkx(project, "import", name, *PARAM_ARGS)
        why = "" if imported.returncode == 0 else "import: " + reason(imported)
        migrated = domarkx(project, "migrate", name)
        ok_migrate = migrated.returncode == 0
        if ok_migrate:
            again = domarkx(project, "import", name, *PARAM_ARGS)
            ok_migrate = again.returncode == 0
            if not ok_migrate:
                why = why or "import after migrate: " + reason(again)
        else:
            why = why or "migrate: " + reason(migrated)
        if not ok_migrate:
            return imported.returncode == 0, False, False, why
        target.write_text(
            point_at(target.read_text(encoding="utf-8"), server.base_url, engine),
            encoding="utf-8",
        )
        snapshot = domarkx(project, "import", name, *PARAM_ARGS)
        ran = domarkx(project, "run", snapshot.stdout.strip() or name, "--yes")
        if ran.returncode != 0:
            why = why or "run: " + reason(ran)
        return imported.returncode == 0, True, ran.returncode == 0, why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="local_shell")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every reason")
    args = parser.parse_args()
    documents = sorted(DOCUMENTS.glob("*.md"))
    totals = [0, 0, 0]
    with ChatServer() as server:
        server.default = Response(text="Done.")
        print(f"{'document':<46} import migrate run")
        for document in documents:
            row = measure(document, server, args.engine)
            for i, flag in enumerate(row[:3]):
                totals[i] += bool(flag)
            marks = "  ".join(f"{'yes' if v else 'no':<6}" for v in row[:3])
            print(f"{document.name:<46} {marks}  {row[3] if args.verbose or not row[2] else ''}")
    print(
        f"{len(documents)} documents: {totals[0]} import as they are, {totals[1]} after "
        f"migrate, {totals[2]} run to the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
