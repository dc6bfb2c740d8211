"""A synthetic domarkx project for the benchmarks: N sessions of about 5 KB each.

    python bench/synth.py DIR [--sessions 1000]

Sessions are spread over folders of 100 (``sessions/g00/s0000.md``), written
like real ones: front matter, a session-config block, a system prompt, user
and assistant turns with paragraphs, lists, tables, links, inline code and
code blocks that do not run (``norun``, ``json``, user messages). Every tenth
session has one runnable ``bash`` block in an assistant message (10 per 100
sessions), and every tenth session (another tenth) includes the shared
partial ``sessions/_common.md``. Output is deterministic for a given N.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

DODO = "from domarkx.pipeline.tasks import *  # noqa: F403\n"
GROUP_SIZE = 100
COMMON = "_common.md"

_WORD_TEXT = (
    "build cache snapshot session export parse include graph task file depends rebuild "
    "the a of to and in is it that for on with as by this from are be at or an which "
    "output input shell block run sandbox container process value table column line "
    "model reply prompt message user system assistant config engine timeout folder path"
)
WORDS = _WORD_TEXT.split()

COMMON_TEXT = """\
**House rules for every session** (shared, from `sessions/_common.md`):

- Answer in short paragraphs; show commands in fenced blocks.
- Never delete files outside the working folder.
- Prefer `grep -rn` over opening files one by one.
- Say which command produced which output.
"""


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    parts = []
    for _ in range(sentences):
        sentence = _sentence(rng, rng.randint(8, 18))
        roll = rng.random()
        if roll < 0.2:
            word = rng.choice(WORDS)
            sentence = sentence.replace(f" {word} ", f" `{word}` ", 1)
        elif roll < 0.35:
            word = rng.choice(WORDS)
            sentence = sentence.replace(f" {word} ", f" **{word}** ", 1)
        elif roll < 0.45:
            word = rng.choice(WORDS)
            sentence = sentence.replace(f" {word} ", f" [{word}](https://example.org/{word}) ", 1)
        parts.append(sentence)
    return " ".join(parts)


def _bullets(rng: random.Random, count: int) -> str:
    return "\n".join(f"- {_sentence(rng, rng.randint(4, 9))}" for _ in range(count))


def _table(rng: random.Random, rows: int) -> str:
    lines = ["| name | value | note |", "| --- | ---: | --- |"]
    for _ in range(rows):
        lines.append(f"| {rng.choice(WORDS)} | {rng.randint(1, 9999)} | {_sentence(rng, 4)[:-1]} |")
    return "\n".join(lines)


def _python_norun(rng: random.Random) -> str:
    name = rng.choice(WORDS)
    return (
        "```python norun\n"
        f"def {name}_count(items):\n"
        f'    """Count the {name} items."""\n'
        "    total = 0\n"
        "    for item in items:\n"
        f"        if item.get({name!r}):\n"
        "            total += 1\n"
        "    return total\n"
        "```"
    )


def _json_block(rng: random.Random) -> str:
    return (
        "```json\n"
        "{\n"
        f'  "{rng.choice(WORDS)}": {rng.randint(1, 100)},\n'
        f'  "{rng.choice(WORDS)}": "{rng.choice(WORDS)}",\n'
        f'  "items": [{rng.randint(1, 9)}, {rng.randint(1, 9)}, {rng.randint(1, 9)}]\n'
        "}\n"
        "```"
    )


def session_text(index: int, runnable: bool, includes: bool, target: int = 5300) -> str:
    """The Markdown of session ``index`` (deterministic), about ``target`` bytes."""
    rng = random.Random(index)
    parts = [
        "---",
        f'title: "Synthetic session {index}"',
        f"author: {rng.choice(['ana', 'bo', 'chen', 'dee'])}",
        f"tags: [{rng.choice(WORDS)}, {rng.choice(WORDS)}]",
        "---",
        "",
        "```yaml session-config",
        "engine: local_shell",
        "timeout: 30",
        "```",
        "",
        f"# Session {index}: {_sentence(rng, 5)[:-1]}",
        "",
        "## system",
        "",
        f"> {_paragraph(rng, 2)}",
        "",
    ]
    user = ["## user", "", _paragraph(rng, 3)]
    if includes:
        user += ["", f"[@rules](domarkx://include?path=../{COMMON})"]
    parts += [*user, ""]
    assistant = ["## assistant", "", _paragraph(rng, 4), "", _bullets(rng, 4), ""]
    if runnable:
        assistant += ["```bash name=check.sh", f"echo session {index}; ls | wc -l", "```", ""]
    parts += assistant
    turn = 0
    while len("\n".join(parts)) < target - 600:
        turn += 1
        kind = turn % 4
        if kind == 1:
            parts += ["## user", "", _paragraph(rng, 2), "", _json_block(rng), ""]
        elif kind == 2:
            parts += ["## assistant", "", _paragraph(rng, 3), "", _python_norun(rng), ""]
        elif kind == 3:
            parts += ["## user", "", _paragraph(rng, 2), ""]
        else:
            parts += ["## assistant", "", "### Summary", "", _table(rng, 4), "", _paragraph(rng, 2)]
            parts += [""]
    parts += ["## user", "", _paragraph(rng, 2), ""]
    return "\n".join(parts)


def session_path(index: int) -> str:
    """``sessions/gNN/sNNNN.md`` (project-relative) of session ``index``."""
    return f"sessions/g{index // GROUP_SIZE:02d}/s{index:04d}.md"


def is_runnable(index: int) -> bool:
    return index % 10 == 0


def includes_common(index: int) -> bool:
    return index % 10 == 5


def generate(root: str, sessions: int) -> list[str]:
    """Write the project under ``root``; the session paths, project-relative."""
    os.makedirs(os.path.join(root, "sessions"), exist_ok=True)
    with open(os.path.join(root, "dodo.py"), "w", encoding="utf-8") as handle:
        handle.write(DODO)
    with open(os.path.join(root, "sessions", COMMON), "w", encoding="utf-8") as handle:
        handle.write(COMMON_TEXT)
    paths = []
    for index in range(sessions):
        path = session_path(index)
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(session_text(index, is_runnable(index), includes_common(index)))
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write the project (made if missing)")
    parser.add_argument("--sessions", type=int, default=1000, help="how many (default 1000)")
    args = parser.parse_args()
    paths = generate(args.folder, args.sessions)
    size = sum(os.path.getsize(os.path.join(args.folder, p)) for p in paths)
    print(f"{len(paths)} sessions, {size / max(1, len(paths)) / 1024:.1f} KB each on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
