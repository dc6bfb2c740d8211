"""``domarkx init``: a new project that ``doit`` builds, with a .gitignore that fits."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import REPO_ROOT, doit, domarkx, output_of


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


def test_the_commented_limits_of_a_new_project_hold_once_uncommented(tmp_path):
    assert domarkx(tmp_path, "init", "new").code == 0
    config = tmp_path / "new" / "domarkx.toml"
    text = config.read_text()
    assert "# [limits]\n# max_turns = 50" in text
    lowered = text.replace("# [limits]", "[limits]").replace("# max_turns = 50", "max_turns = 1")
    config.write_text(lowered.replace('# expansion = "10m"', 'expansion = "10m"'))
    (tmp_path / "new" / "sessions" / "asks.md").write_text(
        "```yaml session-config\nmodel:\n  provider: scripted\n  max_turns: 2\n```\n\n"
        "## user\n\nHello?\n"
    )
    built = doit(tmp_path / "new")
    assert built.code != 0
    assert "past the project's ceiling of 1 model call" in built.out + built.err
    assert "([limits] max_turns)" in built.out + built.err


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


def readme_tour() -> list[tuple[str, list[str]]]:
    """The README tour's commands, each with the lines it shows (``$ cmd`` lines)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## A tour", 1)[1].split("````console\n", 1)[1].split("\n````", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].split("  #", 1)[0].strip(), []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def test_the_readme_tour_works_in_a_project_that_init_made(tmp_path):
    """The tour starts from `domarkx init`, so every file it names exists there."""
    import os
    import re
    import sys
    from pathlib import Path

    steps = readme_tour()
    assert steps[0][0].startswith("domarkx init "), "the tour must start with domarkx init"
    env = dict(os.environ)
    env.pop("DOMARKX_HOME", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ids: dict[str, str] = {}  # id shown in the README -> the id this run made
    cwd = tmp_path
    for command, shown in steps:
        for readme_id, real in ids.items():
            for token in re.findall(r"\b[0-9a-f]{4,64}\b", command):
                if readme_id.startswith(token):
                    command = command.replace(token, real[: len(token)])
        script = f"{command}\npwd >&3"
        done = subprocess.run(
            ["bash", "-c", f"exec 3>{tmp_path / '.cwd'}\n{script}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
        cwd = Path((tmp_path / ".cwd").read_text().strip())
        if shown and re.fullmatch(r"[0-9a-f]{64}", shown[0]):
            ids[shown[0]] = done.stdout.split()[0]
