"""A command given a document works in the document's project, and never through a link
that leads outside it: ``domarkx run FILE`` imports FILE there; ``migrate`` refuses a link
out of the project and keeps a link inside it. Real processes, real files and links.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support import domarkx

DOC = """\
```yaml session-config
engine: local_shell
```

## assistant

```sh
echo ran $((6 * 7))
```
"""

OLD = """\
```yaml session-config
engine: local_shell
```

## unknow

a result
"""


def test_run_of_a_document_imports_it_into_its_own_project(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "sessions").mkdir(parents=True)
    (proj / "sessions" / "q.md").write_text(DOC)
    code, out, err = domarkx(tmp_path, "run", "proj/sessions/q.md", process=True)
    assert code == 0, err
    assert "no snapshot matches" not in err
    ident = out.strip().splitlines()[-1]
    code, exported, err = domarkx(proj, "export", ident, process=True)
    assert code == 0, err
    assert "ran 42" in exported
    assert not (tmp_path / ".domarkx").exists()  # no store made in the current folder
    assert (proj / ".domarkx" / "tags" / "q").is_file()  # tagged as `domarkx import` tags it


def test_run_of_a_tag_still_runs_the_tagged_snapshot(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "q.md").write_text(DOC)
    assert domarkx(tmp_path, "import", "sessions/q.md", process=True).code == 0
    code, out, err = domarkx(tmp_path, "run", "q", process=True)
    assert code == 0, err
    assert out.strip()


def test_migrate_refuses_a_session_linked_outside_the_project(tmp_path: Path) -> None:
    root, outside = tmp_path / "proj", tmp_path / "elsewhere"
    (root / "sessions").mkdir(parents=True)
    outside.mkdir()
    (outside / "old.md").write_text(OLD)
    os.symlink(outside / "old.md", root / "sessions" / "old.md")
    code, _out, err = domarkx(root, "migrate", "sessions/old.md", process=True)
    assert code == 1
    assert "sessions/old.md" in err and "outside the project" in err
    assert "Traceback" not in err
    assert (outside / "old.md").read_text() == OLD  # not rewritten through the link
    assert os.readlink(root / "sessions" / "old.md") == str(outside / "old.md")  # link kept


def test_migrate_through_a_link_inside_the_project_keeps_the_link(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "sessions").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "docs" / "old.md").write_text(OLD)
    os.symlink("../docs/old.md", root / "sessions" / "old.md")
    code, _out, err = domarkx(root, "migrate", "sessions/old.md", process=True)
    assert code == 0, err
    assert (root / "sessions" / "old.md").is_symlink()
    assert "## tool" in (root / "docs" / "old.md").read_text()
