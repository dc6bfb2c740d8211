"""The setup script's output in an export: written after its block, read back as its output.

An export of a run shows what the setup script printed (an output fence after
the ``setup-script`` block), failed or not; importing that export gives it back
as the setup script's output (not as preamble text), and exporting again gives
the same bytes. Commands run as a user runs them, in real processes.
"""

from __future__ import annotations

from pathlib import Path

from domarkx.parsing.markdown import MarkdownParser
from tests.support import DODO, doit, domarkx

SESSION = """\
# Setting up

```bash setup-script
echo ready
echo warming up >&2
{last}
```

## user

```bash run
echo asked
```
"""


def run_and_export(root: Path) -> tuple[int, str, str]:
    """``domarkx import``, ``run`` and ``export`` of sessions/s.md: run's status and error,
    and the export."""
    assert domarkx(root, "import", "sessions/s.md", process=True).code == 0
    ran = domarkx(root, "run", "s", process=True)
    instance = ran.out.strip().splitlines()[-1] if ran.out.strip() else ""
    if not instance:  # a failed run names its instance in the hint
        instance = ran.err.split("domarkx export ")[1].split("`")[0]
    shown = domarkx(root, "export", instance, process=True)
    assert shown.code == 0, shown.err
    return ran.code, ran.err, shown.out


def round_trips(root: Path, exported: str) -> str:
    """Import ``exported`` as a session and export it again: the same bytes."""
    (root / "sessions" / "again.md").write_text(exported, encoding="utf-8")
    assert domarkx(root, "import", "sessions/again.md", process=True).code == 0
    again = domarkx(root, "export", "again", process=True)
    assert again.code == 0, again.err
    assert again.out == exported
    return again.out


def test_the_export_of_a_run_shows_the_setup_output_and_reads_it_back(project):
    root = project({"sessions/s.md": SESSION.format(last="")})
    code, err, exported = run_and_export(root)
    assert code == 0, err
    assert (
        "```bash setup-script\necho ready\necho warming up >&2\n\n```\n\n"
        "```text output exit_code=0\nready\n```\n\n"
        "```text output stream=stderr\nwarming up\n```\n\n## user"
    ) in exported
    round_trips(root, exported)

    parsed = MarkdownParser().parse_text(exported, "s.md")
    assert parsed.preamble == "# Setting up"  # not the output fences
    assert [(o.stream, o.text, o.exit_code) for o in parsed.setup_output] == [
        ("stdout", "ready", 0),
        ("stderr", "warming up", None),
    ]


def test_a_failed_setup_scripts_output_is_in_the_export_and_round_trips(project):
    root = project({"sessions/s.md": SESSION.format(last="exit 3")})
    code, err, exported = run_and_export(root)
    assert code == 1 and "the setup script failed with exit status 3" in err
    assert "```text output exit_code=3\nready\n```" in exported
    assert "```text output stream=stderr\nwarming up\n```" in exported
    round_trips(root, exported)


def test_the_build_export_shows_the_setup_output(project):
    root = project({"sessions/s.md": SESSION.format(last=""), "dodo.py": DODO})
    built = doit(root, process=True)
    assert built.code == 0, built.out + built.err
    exported = (root / ".domarkx" / "exports" / "s.md").read_text(encoding="utf-8")
    assert "```\n\n```text output exit_code=0\nready\n```\n\n" in exported
    round_trips(root, exported)


def test_an_output_fence_right_after_the_setup_script_is_its_output_and_only_there():
    text = (
        "```bash setup-script\necho hi\n```\n\n"
        "```text output exit_code=0\nhi\n```\n\n"
        "Prose.\n\n"
        "```text output\nnot the setup script's\n```\n\n"
        "## user\n\nHello.\n"
    )
    parsed = MarkdownParser().parse_text(text, "s.md")
    assert [o.text for o in parsed.setup_output] == ["hi"]
    assert parsed.preamble == "Prose.\n\n```text output\nnot the setup script's\n```"


def test_a_document_without_setup_output_is_stored_as_before(project):
    """The snapshot holds a setup output only when there is one: older files and ids stay."""
    root = project({"sessions/s.md": SESSION.format(last="")})
    imported = domarkx(root, "import", "sessions/s.md", process=True)
    assert imported.code == 0, imported.err
    snapshot_id = imported.out.strip().splitlines()[-1]
    [stored] = (root / ".domarkx").rglob(f"{snapshot_id}.json")
    assert "setup_output" not in stored.read_text(encoding="utf-8")
