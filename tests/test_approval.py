"""Model-written code runs on this machine (local_shell) only with the user's grant.

The "model" is the offline scripted provider: its reply holds a shell block
that leaves a file behind, so each test sees whether the code really ran.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domarkx.cli.main import main
from domarkx.data.models import NOT_RUN, NOT_RUN_BY_CONFIG
from domarkx.data.store import Store
from tests.support import doit, process_env

SESSION = """\
---
scripted_replies:
  - "I will look:\\n\\n```bash\\ntouch {marker} && echo ran\\n```"
  - "Done."
---

```yaml session-config
model:
  provider: scripted
```

## user

> Look around.
"""

DODO = "from domarkx.pipeline.tasks import *  # noqa: F403\n"


@pytest.fixture(autouse=True)
def no_grant_from_outside(monkeypatch):
    """No terminal in this process (even under ``pytest -s``) and no DOMARKX_YES."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.delenv("DOMARKX_YES", raising=False)


@pytest.fixture
def session(project, tmp_path):
    marker = tmp_path / "pwned"
    root = project({"sessions/look.md": SESSION.format(marker=marker)})
    return root, marker


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_without_a_terminal_or_grant_the_run_stops_before_the_code(session, capsys):
    root, marker = session
    assert run(capsys, "import", "sessions/look.md")[0] == 0
    code, _, err = run(capsys, "run", "look")

    assert code == 1
    assert not marker.exists()
    assert "sessions/look.md" in err and "--yes" in err and 'approve = "auto"' in err
    assert "Traceback" not in err
    # Everything before the call is kept: the model's reply, in a failed instance.
    store = Store(root / ".domarkx", root)
    [instance_id] = store.instance_ids()
    instance = store.get_instance(instance_id)
    assert instance.status == "failed" and "nothing approves it" in (instance.error or "")
    assert f"domarkx export {instance_id[:12]}" in err
    assert instance.conversation[-1].role == "assistant"
    assert "touch" in instance.conversation[-1].content[-1].code  # type: ignore[union-attr]


def test_yes_runs_it(session, capsys):
    _, marker = session
    run(capsys, "import", "sessions/look.md")
    code, _, err = run(capsys, "run", "--yes", "look")
    assert code == 0, err
    assert marker.exists()


def test_approve_auto_in_the_configuration_runs_it(session, capsys):
    root, marker = session
    (root / "domarkx.toml").write_text('approve = "auto"\n')
    run(capsys, "import", "sessions/look.md")
    code, _, err = run(capsys, "run", "look")
    assert code == 0, err
    assert marker.exists()


def test_approve_never_records_that_it_did_not_run(session, capsys):
    root, marker = session
    (root / "domarkx.toml").write_text('approve = "never"\n')
    run(capsys, "import", "sessions/look.md")
    code, out, err = run(capsys, "run", "look")
    assert code == 0, err
    assert not marker.exists()
    code, exported, _ = run(capsys, "export", out.strip())
    assert NOT_RUN_BY_CONFIG in exported and NOT_RUN not in exported


def test_a_document_cannot_grant_itself(session, capsys):
    """A `session-config` or front matter `approve` is only content."""
    root, marker = session
    text = (root / "sessions/look.md").read_text()
    text = text.replace("model:\n", "approve: auto\nyes: true\nmodel:\n")
    (root / "sessions/look.md").write_text(text)
    run(capsys, "import", "sessions/look.md")
    assert run(capsys, "run", "look")[0] == 1
    assert not marker.exists()


def test_a_build_stops_without_a_grant_and_runs_with_one(session, cli):
    root, marker = session
    (root / "dodo.py").write_text(DODO)
    code, out, err = cli("build")
    assert code == 1 and not marker.exists()
    assert "sessions/look.md" in out + err and "nothing approves it" in out + err

    code, out, err = cli("build", "--yes")
    assert code == 0, out + err
    assert marker.exists()


def test_doit_takes_the_grant_from_domarkx_yes(session):
    root, marker = session
    (root / "dodo.py").write_text(DODO)
    done = doit(root, process=True)
    assert done.code != 0 and not marker.exists()
    # doit has no --yes: the hint names what does grant it there.
    assert "DOMARKX_YES=1 doit" in done.out + done.err
    done = doit(root, env={"DOMARKX_YES": "1"}, process=True)
    assert done.code == 0, done.out + done.err
    assert marker.exists()


def test_a_refused_run_is_not_cached(session, cli):
    """A "no" (here: approve = "never") must not stick once the user grants it."""
    root, marker = session
    (root / "dodo.py").write_text(DODO)
    (root / "domarkx.toml").write_text('approve = "never"\n')
    code, out, err = cli("build")
    assert code == 0 and not marker.exists(), out + err
    (root / "domarkx.toml").write_text('approve = "auto"\n')
    code, out, err = cli("build", "--always-execute")
    assert code == 0, out + err
    assert marker.exists()


def converse(root: Path, answers: list[str], *argv: str) -> tuple[int, str]:
    """Run ``domarkx ARGV`` with stdin and stderr on a terminal; answer each question."""
    master, slave = pty.openpty()
    env = process_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "domarkx", *argv],
        cwd=root,
        env=env,
        stdin=slave,
        stderr=slave,
        stdout=subprocess.PIPE,
    )
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.rstrip().endswith(b"[a]lways:"):
                os.write(master, pending.pop(0).encode() + b"\n")
                seen += b"<answered>"
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def test_on_a_terminal_the_user_is_asked(session, capsys):
    root, marker = session
    run(capsys, "import", "sessions/look.md")
    code, screen = converse(root, ["no"], "run", "look")
    assert code == 0, screen
    assert f"touch {marker}" in screen and "run it?" in screen
    assert not marker.exists()

    code, screen = converse(root, ["yes"], "run", "look")
    assert code == 0, screen
    assert marker.exists()


def test_the_prompt_shows_the_code_and_always_stops_asking():
    from domarkx.session.approval import Approval, CodeRequest, terminal_prompt

    request = CodeRequest("s.md", "message 3 (assistant)", "local_shell", "bash", "rm -rf x\nls")
    screen = io.StringIO()
    asked: list[str] = []

    def ask(req: CodeRequest):
        asked.append(req.code)
        return terminal_prompt(req, stdin=io.StringIO("maybe\nalways\n"), stderr=screen)

    approval = Approval(mode="ask", ask=ask)
    assert approval.decide(request, isolated=False)
    assert approval.decide(request, isolated=False)  # not asked again
    assert len(asked) == 1
    assert "  | rm -rf x\n  | ls\n" in screen.getvalue()
    assert screen.getvalue().count("run it?") == 2  # "maybe" is asked again
    # End of input is a no.
    assert terminal_prompt(request, stdin=io.StringIO(""), stderr=io.StringIO()) == "no"
