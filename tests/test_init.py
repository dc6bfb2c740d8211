"""``domarkx init``: a new project that ``doit`` builds, with a .gitignore that fits."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_pipeline import doit, domarkx, output_of


def test_init_makes_a_project_that_doit_builds(tmp_path):
    made = domarkx(tmp_path, "init", "new")
    assert made.code == 0, made.err
    root = tmp_path / "new"
    assert made.out.split() == [
        str(root.relative_to(tmp_path) / name)
        for name in ("dodo.py", "sessions/example.md", ".gitignore", "domarkx.toml")
    ]
    assert "from domarkx.pipeline.tasks import *" in (root / "dodo.py").read_text()

    first = doit(root)
    assert first.code == 0, first.out + first.err
    assert output_of((root / ".domarkx/exports/example.md").read_text()) == "42\n"
    second = doit(root)
    assert second.code == 0
    assert "nothing to do: all 5 tasks up to date" in second.out


def test_init_keeps_files_that_are_there(tmp_path):
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions/example.md").write_text("mine\n")
    made = domarkx(tmp_path, "init")
    assert made.code == 0
    assert "kept sessions/example.md" in made.err
    assert (tmp_path / "sessions/example.md").read_text() == "mine\n"
    assert (tmp_path / "dodo.py").is_file()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_gitignore_keeps_exports_and_ignores_caches(tmp_path):
    root = tmp_path / "p"
    assert domarkx(tmp_path, "init", "p").code == 0
    assert doit(root).code == 0
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listed = sorted(line[3:] for line in status.splitlines())
    assert listed == [
        ".domarkx/exports/example.md",
        ".gitignore",
        "dodo.py",
        "domarkx.toml",
        "sessions/example.md",
    ]
