"""Turn layers never stand in for code that did not run.

A layer saved by a run where a block ran holds that block's output and what
it left in the sandbox. When the same code is later refused (the document
carries its "not run" output, or ``approve = "never"`` refuses the model's
code), no layer of that run may be used: the export, the model and the later
blocks see what a run from scratch gives (nothing of the refused code). Every
command is a real process; a side-effect log outside the sandbox counts runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domarkx.data.models import NOT_RUN, NOT_RUN_BY_CONFIG
from domarkx.session.blocks import code_digest
from tests.chat_server import ChatServer
from tests.layer_support import LOCAL, build_and_run, ran
from tests.support import domarkx, new_project

MODEL_METADATA = '```json msg-metadata\n{"provider": "openai", "model": "test-model"}\n```\n\n'


def secret_block(log: Path) -> str:
    """Code that logs its run, prints a secret and leaves a file behind."""
    return f'echo "m1 $(date +%s%N)" >> {log}\necho secret-$((6 * 7)); touch left-behind'


def later_block(log: Path) -> str:
    return f'echo "m2 $(date +%s%N)" >> {log}\ntest -e left-behind && echo present || echo absent'


def document(log: Path, *, model: str = "", refusal: str = "", tail: str = "") -> str:
    first = f"## assistant\n\n{model}```bash\n{secret_block(log)}\n```\n\n{refusal}"
    second = f"## assistant\n\n```bash\n{later_block(log)}\n```\n\n"
    return LOCAL.format(extra="") + first + second + tail


def refusal_of(code: str, text: str = NOT_RUN) -> str:
    """The output a refused block carries in a document."""
    return f"```text output code_sha256={code_digest(code)}\n{text}\n```\n\n"


def outputs(export: str) -> list[str]:
    """The texts of an export's output blocks, in order."""
    return re.findall(r"```text output[^\n]*\n(.*?)\n```", export, re.S)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "side-effects.log"


def test_a_refusal_written_in_the_document_is_not_replaced_by_a_layer(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document(log)})
    first = build_and_run(root)
    assert ran(log) == ["m1", "m2"]
    assert outputs(first) == ["secret-42", "present"]

    # The same code, now refused in the document: a layer of the first run holds its
    # output and its file; the run must not start from it.
    refused = document(log, refusal=refusal_of(secret_block(log)))
    (root / "sessions" / "s.md").write_text(refused)
    second = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m2"]  # the refused block did not run; m2 ran again
    assert outputs(second) == [NOT_RUN, "absent"] and "secret-42" not in second

    # The refusal is in the key: a run of the refused document resumes from its own
    # layers (nothing runs) and exports the same.
    assert build_and_run(root) == second
    assert ran(log) == ["m1", "m2", "m2"]

    # Deleting the "not run" output lifts the refusal: the first run's layers match again.
    (root / "sessions" / "s.md").write_text(document(log))
    assert build_and_run(root) == first
    assert ran(log) == ["m1", "m2", "m2"]


def test_approve_never_is_in_the_key_and_the_model_sees_no_real_output(tmp_path, log):
    """Run once with a grant (the model's block runs, layers are saved), then under
    ``approve = "never"``: the block says "not run" in the export and to the model."""
    with ChatServer() as server:
        tail = "## user\n\n> What did it print?\n"
        config = (
            f"```yaml session-config\nengine: local_shell\nmodel:\n  name: test-model\n"
            f"  base_url: {server.base_url}\n```\n\n"
        )
        text = document(log, model=MODEL_METADATA, tail=tail).replace(
            LOCAL.format(extra=""), config
        )
        root = new_project(tmp_path / "p", {"sessions/s.md": text})
        server.reply("It printed something.", "Nothing ran.", "Nothing ran.")
        env = {"DOMARKX_YES": "1"}
        assert domarkx(root, "import", "sessions/s.md", process=True).code == 0
        done = domarkx(root, "run", "s", process=True, env=env)
        assert done.code == 0, done.err
        assert ran(log) == ["m1", "m2"]
        told = "\n".join(str(m.get("content")) for m in server.requests[-1]["messages"])
        assert "secret-42" in told

        (root / "domarkx.toml").write_text('approve = "never"\n')
        for _ in range(2):  # the second run resumes from the layers the first saved
            done = domarkx(root, "run", "s", process=True, env={"DOMARKX_YES": None})
            assert done.code == 0, done.err
            export = domarkx(root, "export", done.out.split()[-1], process=True).out
            assert outputs(export) == [NOT_RUN_BY_CONFIG, "absent"]
            assert "secret-42" not in export
        assert ran(log) == ["m1", "m2", "m2"]
        told = "\n".join(str(m.get("content")) for m in server.requests[-1]["messages"])
        assert NOT_RUN_BY_CONFIG in told and "secret-42" not in told
        assert re.search(r"\babsent\b", told)
