"""Bad input through the real command: status 1, one message naming file and line, store untouched."""

from __future__ import annotations

import re

import pytest

from domarkx.data.store import Store
from domarkx.session.snapshot import SnapshotManager

# (name, files, the file the message names, its line, words of the message)
CASES = [
    (
        "front matter is not YAML",
        {"sessions/bad.md": "---\ntitle: [unclosed\n---\n\n## user\n\nhi\n"},
        "sessions/bad.md",
        3,
        "invalid YAML in front matter",
    ),
    (
        "front matter is not a mapping",
        {"sessions/bad.md": "---\n- one\n- two\n---\n\n## user\n\nhi\n"},
        "sessions/bad.md",
        2,
        "front matter must be a YAML mapping",
    ),
    (
        "front matter is not closed",
        {"sessions/bad.md": "---\ntitle: x\n\n## user\n\nhi\n"},
        "sessions/bad.md",
        1,
        "front matter is not closed",
    ),
    (
        "two session-config blocks",
        {
            "sessions/bad.md": "# T\n\n```yaml session-config\ntimeout: 5\n```\n\n"
            "```json session-config\n{}\n```\n\n## user\n\nhi\n"
        },
        "sessions/bad.md",
        7,
        "a second session-config block",
    ),
    (
        "session-config is not JSON",
        {
            "sessions/bad.md": '```json session-config\n{\n  "timeout": 5,\n}\n```\n\n## user\n\nhi\n'
        },
        "sessions/bad.md",
        4,
        "invalid JSON in session-config",
    ),
    (
        "session-config is not YAML",
        {
            "sessions/bad.md": "```yaml session-config\ntimeout: 5\nenv: {A: [1}\n```\n\n## user\n\nhi\n"
        },
        "sessions/bad.md",
        3,
        "invalid YAML in session-config",
    ),
    (
        "session-config has a bad value",
        {"sessions/bad.md": "\n```yaml session-config\ntimeout: -1\n```\n\n## user\n\nhi\n"},
        "sessions/bad.md",
        2,
        "session-config: timeout",
    ),
    (
        "msg-metadata is not JSON",
        {
            "sessions/bad.md": "## user\n\nhi\n\n## assistant\n\n```json msg-metadata\n"
            '{"content": [\n  {"id": 1,,}\n]}\n```\n'
        },
        "sessions/bad.md",
        9,
        "invalid JSON in msg-metadata",
    ),
    (
        "msg-metadata is not YAML",
        {"sessions/bad.md": "## user\n\n```yaml msg-metadata\nsource: user\n  type: x: y\n```\n"},
        "sessions/bad.md",
        5,
        "invalid YAML in msg-metadata",
    ),
    (
        "an unknown role heading",
        {"sessions/bad.md": "## user\n\nhi\n\n## narrator\n\nonce upon a time\n"},
        "sessions/bad.md",
        5,
        "unknown role heading `## narrator`",
    ),
    (
        "a missing include",
        {"sessions/bad.md": "## user\n\nSee:\n[@i](domarkx://include?path=_gone.md)\n"},
        "sessions/bad.md",
        4,
        "included file `_gone.md` not found",
    ),
    (
        "an include cycle",
        {
            "sessions/bad.md": "## user\n\n[@i](domarkx://include?path=_parts/a.md)\n",
            "sessions/_parts/a.md": "A\n\n[@i](domarkx://include?path=b.md)\n",
            "sessions/_parts/b.md": "B [@i](domarkx://include?path=a.md)\n",
        },
        "sessions/_parts/b.md",
        1,
        "include cycle: sessions/bad.md -> sessions/_parts/a.md -> sessions/_parts/b.md "
        "-> sessions/_parts/a.md",
    ),
    (
        "an include outside the project",
        {"sessions/bad.md": "## user\n\n\n[@i](domarkx://include?path=../../secret.md)\n"},
        "sessions/bad.md",
        4,
        "leaves the project folder",
    ),
    (
        "an unknown macro without a parameter",
        {"sessions/bad.md": "## user\n\n> Hello\n> [@who](domarkx://who)!\n"},
        "sessions/bad.md",
        4,
        "unknown macro 'who'",
    ),
    (
        "a file that is not UTF-8",
        {"sessions/bad.md": "## user\n\nna\u00efve\n".encode("latin-1")},
        "sessions/bad.md",
        3,
        "not UTF-8 text",
    ),
    (
        "an included file that is not UTF-8",
        {
            "sessions/bad.md": "## user\n\n[@i](domarkx://include?path=_latin1.md)\n",
            "sessions/_latin1.md": "caf\u00e9\n".encode("latin-1"),
        },
        "sessions/bad.md",
        3,
        "not UTF-8 text",
    ),
    (
        "an output block after no code",
        {"sessions/bad.md": "## assistant\n\n```text output exit_code=0\nhi\n```\n"},
        "sessions/bad.md",
        3,
        "follows no code block",
    ),
]


@pytest.fixture
def store_before(project):
    """A project whose store already holds a snapshot; returns a picture of the store."""
    root = project({"sessions/good.md": "## user\n\nfine\n"})
    SnapshotManager(Store(root / ".domarkx", root)).import_file(root / "sessions" / "good.md")
    return picture(root)


def picture(root) -> dict[str, bytes]:
    """Every file under .domarkx/ (hidden temporary files included) with its content."""
    store = root / ".domarkx"
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def assert_one_message(err: str, file: str, line: int | None, words: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    where = f"{file}:{line}: " if line else f"{file}: "
    assert lines[0].startswith(f"domarkx: error: {where}"), err
    assert words in lines[0], err
    # One message: the error line, and at most a hint under it.
    assert all(extra.startswith("  hint: ") for extra in lines[1:]), err
    assert len(lines) <= 2, err


@pytest.mark.parametrize(
    ("files", "file", "line", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(cli, project, store_before, files, file, line, words):
    root = project(files)
    code, out, err = cli("import", "sessions/bad.md")
    assert (code, out) == (1, "")
    assert_one_message(err, file, line, words)
    assert picture(root) == store_before


def test_a_file_that_does_not_exist(cli, project, store_before):
    root = project()
    code, out, err = cli("import", "sessions/nothing-here.md")
    assert (code, out) == (1, "")
    assert_one_message(err, "sessions/nothing-here.md", None, "no such file")
    assert picture(root) == store_before


def test_a_folder_is_not_a_document(cli, project, store_before):
    root = project()
    code, out, err = cli("import", "sessions")
    assert (code, out) == (1, "")
    assert_one_message(err, "sessions", None, "is a folder")
    assert picture(root) == store_before


def test_every_case_was_checked_in_process_too(project):
    """The same errors carry the same file and line when domarkx is used as a library."""
    from domarkx.errors import DomarkxError

    for name, files, file, line, words in CASES:
        root = project(files)
        manager = SnapshotManager(Store(root / ".domarkx", root))
        with pytest.raises(DomarkxError) as info:
            manager.import_file(root / "sessions" / "bad.md")
        assert (info.value.file, info.value.line) == (file, line), name
        assert words in info.value.message, name
        (root / "sessions" / "bad.md").unlink()


def test_debug_shows_the_traceback(cli_process, project):
    """What the process itself prints: Python's traceback, exit status 1."""
    project({"sessions/bad.md": "## narrator\n"})
    code, _, err = cli_process("--debug", "import", "sessions/bad.md")
    assert code == 1
    assert "Traceback" in err
    assert re.search(r"DocumentError: sessions/bad.md:1: unknown role heading", err)
