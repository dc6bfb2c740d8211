"""Turn layers in a session with checks: the sandbox checks are part of the chain.

The ``sh`` and ``python`` checks of a turn run in the sandbox after it, before
the next turn's code; what they leave is part of the sandbox, so their code is
in the key of the next layer and their results in its record. A run that
starts from a layer gives the earlier turns the results a run from scratch
gives (sandbox checks from the record, the other kinds evaluated again), and
runs only the code after it. Every command is a real process; a side-effect
log outside the sandbox counts what ran, with nanosecond stamps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.layer_support import build_and_run, ran
from tests.support import domarkx, new_project


def stamp(name: str, log: Path) -> str:
    return f'echo "{name} $(date +%s%N)" >> {log}'


def document(log: Path, first_check: str = "test -f a.txt", says: str = "Made") -> str:
    return f"""\
```yaml session-config
engine: local_shell
timeout: 20
```

## user

> Make a.txt.

```yaml expect
- sh: {stamp("c1", log)}; echo seen > checked.txt; {first_check}
- contains: {says}
- python: import os; assert os.path.exists("b.txt"), "no b.txt yet"
- sh: echo nope >&2; exit 3
```

## assistant

> Made it.

```bash
{stamp("m1", log)}; echo a > a.txt
```

## user

> Now b.txt, and say what the check left.

```yaml expect
- sh: {stamp("c2", log)}; test "$(cat b.txt)" = b
```

## assistant

```bash
{stamp("m2", log)}; echo b > b.txt; cat checked.txt
```
"""


def check_results(export: str) -> list[tuple[str, bool, str]]:
    """Every check result an export's msg-metadata blocks hold: kind, passed, detail."""
    found = []
    for block in re.findall(r"```json msg-metadata\n(.*?)\n```", export, re.S):
        for item in json.loads(block).get("checks", []):
            found.append((item["kind"], item["passed"], item["detail"]))
    return found


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "side-effects.log"


def test_a_session_with_checks_resumes_and_its_checks_keep_their_results(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document(log)})
    first = build_and_run(root)
    assert ran(log) == ["m1", "c1", "m2", "c2"]
    assert "```text output exit_code=0\nseen\n```" in first  # m2 saw the check's file
    assert check_results(first) == [
        ("sh", True, "exit 0"),
        ("contains", True, "found 'Made'"),
        ("python", False, "exit 1: AssertionError: no b.txt yet"),  # it ran before m2
        ("sh", False, "exit 3: nope"),
        ("sh", True, "exit 0"),
    ]

    # Resumed from message 2's layer: only the last turn's check runs again (after it);
    # the first turn's results are the ones a run from scratch gives.
    second = build_and_run(root)
    assert ran(log) == ["m1", "c1", "m2", "c2", "c2"]
    assert second == first

    scratch = domarkx(root, "run", "s", process=True, env={"DOMARKX_LAYERS": "0"})
    assert scratch.code == 0, scratch.err
    exported = domarkx(root, "export", scratch.out.split()[-1], process=True)
    assert exported.out == first  # byte for byte, as from scratch
    assert ran(log)[-4:] == ["m1", "c1", "m2", "c2"]


def test_editing_a_sandbox_check_reruns_what_follows_it_and_a_text_check_reruns_nothing(
    tmp_path, log
):
    root = new_project(tmp_path / "p", {"sessions/s.md": document(log)})
    build_and_run(root)
    assert ran(log) == ["m1", "c1", "m2", "c2"]

    # A text check changes: not in the key; evaluated again on the document.
    (root / "sessions" / "s.md").write_text(document(log, says="Nope"))
    export = build_and_run(root)
    assert ran(log) == ["m1", "c1", "m2", "c2", "c2"]
    results = check_results(export)
    assert results[1][:2] == ("contains", False) and results[0] == ("sh", True, "exit 0")

    # A sandbox check changes: it ran before message 2, so message 2 runs again after it,
    # from message 1's layer (message 1 does not run again).
    (root / "sessions" / "s.md").write_text(document(log, first_check="test -f nothing"))
    export = build_and_run(root)
    assert ran(log) == ["m1", "c1", "m2", "c2", "c2", "c1", "m2", "c2"]
    assert check_results(export)[0] == ("sh", False, "exit 1")
