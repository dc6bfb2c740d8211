"""Regenerate ``commonmark-spec-0.30.json``, the CommonMark spec examples the tests read.

    .venv/bin/python tests/data/commonmark_spec.py             # fetch the npm tarball
    .venv/bin/python tests/data/commonmark_spec.py spec.txt    # or read a spec.txt at hand

The examples come from ``spec.txt`` of the npm package ``commonmark-spec``
0.30.0 (the spec's own release; no PyPI wheel ships them), fetched over HTTPS
from the npm registry (no npm needed). Each example's Markdown and HTML are
written with the spec's tab arrows (U+2192) turned back into tabs. The tests
never run this: they read the JSON file committed beside it, so they need no
network. The spec text is © John MacFarlane, CC BY-SA 4.0; so is the data file.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "0.30.0"
TARBALL = f"https://registry.npmjs.org/commonmark-spec/-/commonmark-spec-{VERSION}.tgz"
OUT = Path(__file__).resolve().parent / "commonmark-spec-0.30.json"
FENCE = "`" * 32


def spec_text(local: str | None) -> str:
    """``spec.txt``: the file named, else the one in the package's tarball."""
    if local:
        return Path(local).read_text(encoding="utf-8")
    with urllib.request.urlopen(TARBALL, timeout=60) as response:
        data = response.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile("package/spec.txt")
        if member is None:
            raise SystemExit(f"{TARBALL}: no package/spec.txt")
        return member.read().decode("utf-8")


def examples(text: str) -> list[dict[str, object]]:
    """Each example: its number, the line its fence starts on, its Markdown and HTML."""
    found: list[dict[str, object]] = []
    state, start = 0, 0
    markdown_lines: list[str] = []
    html_lines: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == f"{FENCE} example":
            state, start, markdown_lines, html_lines = 1, number, [], []
        elif stripped == FENCE and state:
            found.append(
                {
                    "example": len(found) + 1,
                    "start_line": start,
                    "markdown": "".join(markdown_lines),
                    "html": "".join(html_lines),
                }
            )
            state = 0
        elif stripped == "." and state == 1:
            state = 2
        elif state == 1:
            markdown_lines.append(line.replace("\u2192", "\t"))
        elif state == 2:
            html_lines.append(line.replace("\u2192", "\t"))
    return found


def main(argv: list[str]) -> int:
    text = spec_text(argv[0] if argv else None)
    found = examples(text)
    data = {
        "version": VERSION,
        "source": f"{TARBALL} package/spec.txt",
        "spec_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "license": "CC BY-SA 4.0 (the CommonMark spec, John MacFarlane)",
        "examples": found,
    }
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(found)} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
