"""A document can make domarkx read only files inside its project (real paths, symlinks resolved).

Real symlinks: a session linked to a file outside, a linked folder of sessions,
a partial linked outside, and ``include?path=../...`` from a document that lies
in no project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from domarkx.cli.main import main

SECRET = "TOP-SECRET-4711"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def nowhere_holds_the_secret(folder: Path) -> bool:
    return not any(
        SECRET in path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file()
    )


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.md").write_text(f"## user\n\n{SECRET}\n")
    return folder


def test_a_session_linked_to_a_file_outside_is_not_read(project, outside, capsys):
    root = project()
    os.symlink(outside / "secret.md", root / "sessions" / "evil.md")
    code, _, err = run(capsys, "import", "sessions/evil.md")
    assert code == 1
    assert "sessions/evil.md: " in err and str(outside / "secret.md") in err
    assert "Traceback" not in err
    assert nowhere_holds_the_secret(root / ".domarkx")


def test_a_build_does_not_read_sessions_linked_outside(project, outside, cli):
    root = project({"dodo.py": "from domarkx.pipeline.tasks import *  # noqa: F403\n"})
    os.symlink(outside, root / "sessions" / "linked")
    code, out, err = cli("build")
    assert code == 1
    assert "sessions/linked/secret.md" in out + err
    assert nowhere_holds_the_secret(root / ".domarkx")


def test_a_partial_linked_outside_is_not_included(project, outside, capsys):
    root = project({"sessions/a.md": "## user\n\n[@p](domarkx://include?path=_partials/p.md)\n"})
    (root / "sessions" / "_partials").mkdir()
    os.symlink(outside / "secret.md", root / "sessions" / "_partials" / "p.md")
    code, _, err = run(capsys, "import", "sessions/a.md")
    assert code == 1
    assert "sessions/a.md:3: " in err and "leaves the project folder" in err
    assert nowhere_holds_the_secret(root / ".domarkx")


def test_links_inside_the_project_are_followed(project, capsys):
    root = project(
        {"docs/a.md": "## user\n\nlinked [@x](domarkx://include?path=b.md)\n", "docs/b.md": "text"}
    )
    os.symlink(root / "docs" / "a.md", root / "sessions" / "alias.md")
    code, _, err = run(capsys, "import", "sessions/alias.md")
    assert code == 0, err


def test_with_no_project_the_document_folder_is_the_limit(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "secret.txt").write_text(SECRET)
    (home / "notes" / "a.md").write_text("## user\n\n[@k](domarkx://include?path=../secret.txt)\n")
    (home / "notes" / "ok.md").write_text("## user\n\n[@k](domarkx://include?path=part.txt)\n")
    (home / "notes" / "part.txt").write_text("a part")
    store = tmp_path / "store"
    monkeypatch.setenv("DOMARKX_HOME", str(store))
    monkeypatch.chdir(home)  # no dodo.py, sessions/ or .domarkx/ here or above

    code, _, err = run(capsys, "import", "notes/a.md")
    assert code == 1 and "leaves the project folder" in err and str(home / "notes") in err
    assert not store.exists() or nowhere_holds_the_secret(store)

    code, _, err = run(capsys, "import", "notes/ok.md")
    assert code == 0, err


def test_a_document_outside_the_project_is_limited_to_its_own_folder(project, tmp_path, capsys):
    """Named on the command line, it is read; its includes stay in its folder."""
    project()
    loose = tmp_path / "loose"
    loose.mkdir()
    (tmp_path / "secret.txt").write_text(SECRET)
    (loose / "a.md").write_text("## user\n\n[@k](domarkx://include?path=../secret.txt)\n")
    (loose / "b.md").write_text("## user\n\nplain\n")
    assert run(capsys, "import", str(loose / "b.md"))[0] == 0
    code, _, err = run(capsys, "import", str(loose / "a.md"))
    assert code == 1 and "leaves the project folder" in err
