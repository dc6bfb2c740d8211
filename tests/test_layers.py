"""Turn layers: a run starts from the sandbox saved after the deepest message it shares.

Every test runs real processes (``domarkx`` as its own process where a run must
start afresh) and counts what ran through a side-effect log outside the
sandbox: one line per run of a block, with a nanosecond stamp.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dockerutil import PYTHON_IMAGE, require_image
from tests.layer_support import DOCKER, LOCAL, build_and_run, document, ran
from tests.support import domarkx, new_project


def message(n: int, log: Path | None, body: str = "", lang: str = "bash") -> str:
    """An assistant message whose bash block logs ``m<n> <ns stamp>`` (host side) then runs."""
    code = f'echo "m{n} $(date +%s%N)" >> {log}\n' if log is not None else ""
    blocks = f"```bash\n{code}{body}\n```\n" if lang == "bash" else f"```python\n{body}\n```\n"
    if lang == "python" and log is not None:
        blocks = f"```bash\n{code.rstrip()}\n```\n\n" + blocks
    return f"## assistant\n\n{blocks}\n"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "side-effects.log"


def session_with_state(log: Path) -> list[str]:
    return [
        message(
            1,
            log,
            'export GREETING=hello\narr=(1 "2 3")\nshout() { echo "${1^^}"; }\n'
            "alias ll='echo aliased'\nshopt -s expand_aliases\nmkdir -p sub && cd sub\n"
            "echo one > f.txt",
        ),
        message(
            2, log, "x = 6 * 7\nimport json as j\ndef twice(v, k=2):\n    return v * k\n", "python"
        ),
        message(3, log, 'echo "$GREETING ${arr[1]} $(cat f.txt) $(basename "$PWD")"; shout ok; ll'),
        message(4, log, "print(x, twice(3), j.dumps([1]))", "python"),
    ]


def test_a_second_run_starts_from_the_last_layer_and_exports_the_same(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document(session_with_state(log))})
    first = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m3", "m4"]
    assert "hello 2 3 one sub\nOK\naliased" in first and "42 6 [1]" in first
    second = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m3", "m4"]  # nothing ran again
    assert second == first


def test_editing_message_k_runs_k_and_later_only(tmp_path, log):
    messages = session_with_state(log)
    root = new_project(tmp_path / "p", {"sessions/s.md": document(messages)})
    build_and_run(root)
    # Message 3's code changes; prose elsewhere changes too (not in the key).
    messages[3 - 1] = message(3, log, 'echo "$GREETING again ${arr[0]}"; shout two; ll')
    text = document(messages).replace("## assistant", "## assistant\n\nSome new prose.", 1)
    (root / "sessions" / "s.md").write_text(text)
    export = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m3", "m4", "m3", "m4"]
    # The state of messages 1 and 2 came back from their layers.
    assert "hello again 1\nTWO\naliased" in export and "42 6 [1]" in export


def test_exports_are_byte_identical_with_layers_on_and_off(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document(session_with_state(log))})
    build_and_run(root)  # saves the layers
    resumed = build_and_run(root)
    off = tmp_path / "off"
    new_project(off, {"sessions/s.md": document(session_with_state(log), extra="layers: false\n")})
    (off / "sessions" / "s.md").write_text(document(session_with_state(log)))
    assert domarkx(off, "import", "sessions/s.md", process=True).code == 0
    done = domarkx(off, "run", "s", process=True, env={"DOMARKX_LAYERS": "0"})
    scratch = domarkx(off, "export", done.out.split()[-1], process=True).out
    assert not (off / ".domarkx" / "layers").exists()  # layers off: none saved
    # The instance folder's name differs; the rest is the same, byte for byte.
    assert resumed.replace(str(root), "R") == scratch.replace(str(off), "R")


def test_a_global_that_does_not_pickle_makes_the_run_start_earlier(tmp_path, log):
    messages = [
        message(1, log, "a = 1", "python"),
        message(2, log, "handle = open('f.txt', 'w')", "python"),
        message(3, log, "print(a, handle.closed)", "python"),
    ]
    root = new_project(tmp_path / "p", {"sessions/s.md": document(messages)})
    build_and_run(root)
    listing = domarkx(root, "layers", "sessions/s.md", process=True)
    assert listing.code == 0, listing.err
    rows = listing.out.splitlines()[1:]
    assert rows[0].endswith("yes")
    assert "handle: TextIOWrapper does not pickle" in rows[1]
    assert "handle" in rows[2] and " no: " in rows[2]
    export = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m3", "m2", "m3"]  # from message 1's layer
    assert "1 False" in export


def test_a_background_process_makes_its_layer_not_restorable(tmp_path, log):
    messages = [message(1, log, "sleep 30 &"), message(2, log, "echo two")]
    root = new_project(tmp_path / "p", {"sessions/s.md": document(messages)})
    build_and_run(root)
    rows = domarkx(root, "layers", "sessions/s.md", process=True).out.splitlines()[1:]
    assert "background process" in rows[0] and "background process" in rows[1]
    build_and_run(root)
    assert ran(log) == ["m1", "m2", "m1", "m2"]


def test_functions_and_classes_of_the_setup_script_come_back(tmp_path, log):
    setup = (
        "```python setup-script\nclass Tool:\n    pass\ndef helper(v):\n    return v + 1\n```\n\n"
    )
    messages = [
        message(1, log, "t = Tool()\nn = helper(1)", "python"),
        message(2, log, "print(type(t).__name__, n, helper(n))", "python"),
    ]
    text = LOCAL.format(extra="") + setup + "\n".join(messages)
    root = new_project(tmp_path / "p", {"sessions/s.md": text})
    build_and_run(root)
    (root / "sessions" / "s.md").write_text(text.replace("helper(n))", "helper(n), 'again')"))
    export = build_and_run(root)
    assert ran(log) == ["m1", "m2", "m2"]
    assert "Tool 2 3 again" in export


def test_layers_false_and_the_environment_variable_turn_them_off(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document([message(1, log, "true")])})
    assert domarkx(root, "import", "sessions/s.md", process=True).code == 0
    for _ in range(2):
        assert domarkx(root, "run", "s", process=True, env={"DOMARKX_LAYERS": "0"}).code == 0
    assert ran(log) == ["m1", "m1"]
    (root / "sessions" / "s.md").write_text(
        document([message(1, log, "true")], extra="layers: false\n")
    )
    build_and_run(root)
    build_and_run(root)
    assert ran(log) == ["m1", "m1", "m1", "m1"]


def test_a_killed_save_leaves_no_half_layer_and_prune_removes_unused_layers(tmp_path, log):
    root = new_project(tmp_path / "p", {"sessions/s.md": document([message(1, log, "true")])})
    build_and_run(root)
    layers = root / ".domarkx" / "layers"
    # What a save killed before its rename leaves: a folder in _tmp, never under a key.
    (layers / "_tmp" / "deadbeef.1.x").mkdir(parents=True)
    keys = [p for p in layers.glob("[0-9a-f][0-9a-f]/*") if p.is_dir()]
    assert keys and all(json.loads((k / "layer.json").read_text())["key"] == k.name for k in keys)
    (root / "sessions" / "s.md").write_text(document([message(1, log, "echo changed")]))
    build_and_run(root)
    assert len([p for p in layers.glob("[0-9a-f][0-9a-f]/*")]) == 2
    pruned = domarkx(root, "prune", process=True)
    assert pruned.code == 0, pruned.err
    left = [p.name for p in layers.glob("[0-9a-f][0-9a-f]/*")]
    assert len(left) == 1  # the tagged snapshot's layer stays


@pytest.mark.docker
def test_docker_layers_resume_and_edit(tmp_path, log):
    require_image(PYTHON_IMAGE)
    messages = [
        "## assistant\n\n```bash\nexport A=1; cd /tmp; echo hi > f; date +%s%N >> /stamps\n```\n",
        "## assistant\n\n```python\nimport os\ny = [1, 2]\ndef g():\n    return len(y)\n```\n",
        '## assistant\n\n```bash\necho "$A $(pwd) $(cat f) $(wc -l < /stamps)"\n```\n',
    ]
    root = new_project(tmp_path / "p", {"sessions/s.md": document(messages, DOCKER)})
    first = build_and_run(root)
    assert "1 /tmp hi 1" in first
    assert build_and_run(root) == first
    messages[2] = "## assistant\n\n```python\nprint(g(), os.sep)\n```\n\n" + messages[2]
    (root / "sessions" / "s.md").write_text(document(messages, DOCKER))
    export = build_and_run(root)
    # /stamps has one line: message 1 did not run again; its files came from the layer.
    assert "2 /" in export and "1 /tmp hi 1" in export
    assert domarkx(root, "prune", process=True).code == 0
