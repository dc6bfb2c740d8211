"""`domarkx run`, `instances`, `stop`, `rm`, `prune` and instance export, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from domarkx.data.models import OutputBlock
from domarkx.data.store import Store
from domarkx.execution.engine import INSTANCE_LABEL
from tests.dockerutil import (
    BUSYBOX_IMAGE,
    containers_labelled,
    processes_running,
    require_image,
    secs,
)
from tests.support import process_env

WHICH_BLOCKS = """
```yaml session-config
timeout: 10
```

## system

```bash run
echo system-run
```

## user

> Please run things.

```bash
echo user-plain
```

```bash run
echo user-run
```

## assistant

```bash name=first.sh
echo assistant-plain
```

```bash norun
echo assistant-norun
```

```text
echo not-a-language
```

```json msg-metadata
{"note": "metadata, not a block"}
```

```python
print("assistant-python")
```
"""


def run_session(cli, name: str, *extra: str) -> str:
    code, out, err = cli("import", f"sessions/{name}.md")
    assert code == 0, err
    code, out, err = cli("run", name, *extra)
    assert code == 0, err
    return out.strip()


def outputs(project_root, instance_id: str) -> list[tuple[str, str | None]]:
    """(code, stdout) pairs of the instance, in order."""
    store = Store(project_root / ".domarkx", project_root)
    instance = store.get_instance(instance_id)
    pairs = []
    for message in instance.conversation:
        for i, block in enumerate(message.content):
            if block.type == "code":
                following = message.content[i + 1] if i + 1 < len(message.content) else None
                ran = following is not None and following.type == "output"
                pairs.append((block.code, following.text if ran else None))
    return pairs


def test_which_blocks_run_follows_the_spec(project, cli):
    root = project({"sessions/which.md": WHICH_BLOCKS})
    instance_id = run_session(cli, "which")
    assert outputs(root, instance_id) == [
        ("echo system-run", "system-run"),
        ("echo user-plain", None),
        ("echo user-run", "user-run"),
        ("echo assistant-plain", "assistant-plain"),
        ("echo assistant-norun", None),
        ("echo not-a-language", None),
        ('print("assistant-python")', "assistant-python"),
    ]


STATE = """
```python setup-script
GREETING = "set by setup"
```

## assistant

```bash
X=5
cd /tmp
```

```bash
echo "X=$X in $(pwd)"
```

```python
print(GREETING)
counter = 41
```

```python
print(counter + 1)
```
"""


def test_state_persists_between_blocks(project, cli):
    root = project({"sessions/state.md": STATE})
    instance_id = run_session(cli, "state")
    assert [out for _, out in outputs(root, instance_id)] == [
        "",
        "X=5 in /tmp",
        "set by setup",
        "42",
    ]


def test_export_of_an_instance_imports_back_with_its_outputs(project, cli):
    root = project({"sessions/state.md": STATE})
    instance_id = run_session(cli, "state")
    code, exported, err = cli("export", instance_id[:12])
    assert code == 0, err
    assert "```text output exit_code=0\nX=5 in /tmp\n```" in exported

    (root / "sessions" / "again.md").write_text(exported, encoding="utf-8")
    code, snapshot_id, err = cli("import", "sessions/again.md")
    assert code == 0, err
    store = Store(root / ".domarkx", root)
    snapshot = store.get_snapshot(snapshot_id.strip())
    instance = store.get_instance(instance_id)

    def without_durations(messages):
        data = [m.model_dump() for m in messages]
        for message in data:
            for block in message["content"]:
                block.pop("duration", None)
        return data

    assert without_durations(snapshot.conversation) == without_durations(instance.conversation)
    code, second, _ = cli("export", "again")
    assert second == exported


def test_failed_block_stops_the_run_and_strict_exits_1(project, cli):
    project(
        {
            "sessions/fails.md": """
            ## assistant

            ```bash
            echo before; exit 3
            ```

            ```bash
            echo never
            ```
            """,
            "sessions/goes-on.md": """
            ```yaml session-config
            on_error: continue
            ```

            ## assistant

            ```bash
            false
            ```

            ```bash
            echo still-runs
            ```
            """,
        }
    )
    root = project()
    instance_id = run_session(cli, "fails")
    store = Store(root / ".domarkx", root)
    instance = store.get_instance(instance_id)
    assert instance.status == "failed"
    assert "exit status 3" in (instance.error or "")
    assert outputs(root, instance_id) == [("echo before; exit 3", "before"), ("echo never", None)]

    code, _, err = cli("run", "fails", "--strict")
    assert code == 1
    assert "failed" in err and "Traceback" not in err

    instance_id = run_session(cli, "goes-on")
    assert outputs(root, instance_id)[1] == ("echo still-runs", "still-runs")
    assert store.get_instance(instance_id).status == "exited"


def test_timeout_kills_the_block_and_says_so(project, cli):
    sleep = secs("71")
    root = project(
        {
            "sessions/slow.md": f"""
            ```yaml session-config
            timeout: 1
            ```

            ## assistant

            ```bash
            sleep {sleep} &
            sleep {sleep}
            ```
            """
        }
    )
    instance_id = run_session(cli, "slow")
    store = Store(root / ".domarkx", root)
    instance = store.get_instance(instance_id)
    output = instance.conversation[0].content[1]
    assert output.timed_out and output.exit_code == 124
    assert "timed out after 1 s" in (instance.error or "")
    assert processes_running(sleep, within=3) == []
    _, exported, _ = cli("export", instance_id)
    assert "```text output exit_code=124 timed_out" in exported


def test_keep_stop_rm_and_prune(project, cli):
    root = project({"sessions/state.md": STATE, "sessions/other.md": "## user\n\nhi\n"})
    kept = run_session(cli, "state", "--keep")
    finished = run_session(cli, "state")

    code, out, _ = cli("instances")
    assert kept[:12] in out and finished[:12] not in out
    code, out, _ = cli("instances", "--all", "--json")
    statuses = {i["instance_id"]: i["status"] for i in json.loads(out)}
    assert statuses == {kept: "running", finished: "exited"}

    code, out, err = cli("stop", kept[:8])
    assert code == 0 and out.strip() == kept, err
    store = Store(root / ".domarkx", root)
    assert store.get_instance(kept).status == "stopped"

    code, out, _ = cli("rm", finished[:10])
    assert out.strip() == finished
    assert not (root / ".domarkx" / "instances" / finished).exists()

    # An untagged snapshot that nothing refers to goes; tagged ones stay.
    code, untagged, _ = cli("import", "sessions/other.md", "--tag", "temp")
    (root / ".domarkx" / "tags" / "temp").unlink()
    code, out, _ = cli("prune")
    assert code == 0
    removed = out.split()
    assert kept in removed and untagged.strip() in removed
    assert store.instance_ids() == []
    assert store.resolve_snapshot("state")


def test_interactive_run_is_driven_from_stdin(project, cli):

    project({"sessions/state.md": STATE})
    cli("import", "sessions/state.md")
    done = subprocess.run(
        [sys.executable, "-m", "domarkx", "run", "-i", "state"],
        input="n\nn\ns\na\nq\n",
        capture_output=True,
        text=True,
        env=process_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "X=5 in /tmp" in done.stdout
    assert "2 run, 2 left" in done.stdout
    assert "42" in done.stdout
    # The instance id comes last, as from a plain `domarkx run`.
    shown = done.stdout.split()[1]  # "instance <12 chars> on local_shell: ..."
    last = done.stdout.strip().splitlines()[-1].split()[-1]
    assert len(last) == 64 and last.startswith(shown)


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        (
            {"sessions/e.md": "```yaml session-config\nengine: nope\n```\n\n## user\n\nhi\n"},
            ["run", "e"],
            "error: sessions/e.md:2: unknown engine 'nope'",  # the line of `engine:`
        ),
        (
            {"sessions/e.md": "## user\n\nhi\n"},
            ["run", "e", "--engine", "warp"],
            "error: unknown engine 'warp'",  # the command line's, not the document's
        ),
        (
            {"sessions/e.md": "## user\n\n```ruby run\nputs 1\n```\n"},
            ["run", "e"],
            "language 'ruby' cannot run",
        ),
        ({"sessions/e.md": "## user\n\nhi\n"}, ["run", "nothing-like-this"], "no snapshot matches"),
        ({"sessions/e.md": "## user\n\nhi\n"}, ["stop", "ffff"], "no instance matches"),
    ],
)
def test_bad_requests_exit_1_with_one_message(project, cli, files, args, message):
    root = project(files)
    code, _, err = cli("import", "sessions/e.md")
    assert code == 0, err
    before = sorted(p.name for p in (root / ".domarkx").rglob("*"))
    code, _, err = cli(*args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("domarkx: error: ")
    after = sorted(p.name for p in (root / ".domarkx").rglob("*"))
    assert after == before  # no instance was half-made


def test_an_ambiguous_prefix_is_refused(project, cli):
    project()
    ids: dict[str, str] = {}
    for n in range(40):
        (project() / "sessions" / f"s{n}.md").write_text(f"## user\n\nnumber {n}\n")
        code, out, _ = cli("import", f"sessions/s{n}.md")
        snapshot_id = out.strip()
        if snapshot_id[0] in ids:
            break
        ids[snapshot_id[0]] = snapshot_id
    prefix = snapshot_id[0]
    code, _, err = cli("run", prefix)
    assert code == 1
    assert "matches 2 snapshots" in err


DOCKER_SESSION = f"""
```yaml session-config
engine: docker
image: {BUSYBOX_IMAGE}
timeout: 20
```

## assistant

```bash
if [ -f /.dockerenv ]; then echo inside-container; fi
X=7
```

```bash
echo "X=$X"; ls /sys/class/net
```
"""


@pytest.mark.docker
def test_docker_run_end_to_end_leaves_no_container(project, cli):
    require_image(BUSYBOX_IMAGE)
    root = project({"sessions/box.md": DOCKER_SESSION})
    instance_id = run_session(cli, "box")
    assert [out for _, out in outputs(root, instance_id)] == ["inside-container", "X=7\nlo"]
    assert containers_labelled(INSTANCE_LABEL, instance_id) == []

    kept = run_session(cli, "box", "--keep")
    assert len(containers_labelled(INSTANCE_LABEL, kept)) == 1
    code, _, err = cli("stop", kept)
    assert code == 0, err
    assert containers_labelled(INSTANCE_LABEL, kept) == []


@pytest.mark.docker
def test_docker_missing_image_is_one_clear_error(project, cli):
    require_image(BUSYBOX_IMAGE)
    project(
        {"sessions/gone.md": DOCKER_SESSION.replace(BUSYBOX_IMAGE, "domarkx-test:no-such-image")}
    )
    cli("import", "sessions/gone.md")
    code, _, err = cli("run", "gone")
    assert code == 1
    assert "domarkx-test:no-such-image" in err and "not found" in err
    assert "Traceback" not in err


def test_build_cache_puts_each_output_after_its_own_block(project):
    """A prose edit reuses the execution cache; outputs stay with their blocks."""
    from tests.support import doit

    session = textwrap.dedent(
        """\
        ## assistant

        > {prose}

        ```bash
        echo one
        ```

        ```bash
        echo two
        ```

        ```python
        print("three")
        ```
        """
    )
    root = project(
        {
            "dodo.py": "from domarkx.pipeline.tasks import *  # noqa: F403\n",
            "sessions/three.md": session.format(prose="First words."),
        }
    )
    assert doit(root).code == 0
    export = root / ".domarkx" / "exports" / "three.md"
    fresh = export.read_text()
    (root / "sessions" / "three.md").write_text(session.format(prose="Other words."))
    rebuilt = doit(root)
    assert rebuilt.code == 0
    assert "run:three" in rebuilt.executed
    cached = export.read_text()
    assert cached == fresh.replace("First words.", "Other words.")
    for word, code in (("one", "echo one"), ("two", "echo two"), ("three", 'print("three")')):
        assert f"{code}\n```\n\n```text output exit_code=0\n{word}\n```" in cached


SETUP_FAILS = """\
```bash setup-script
echo preparing
for i in 1 2 3 4 5 6 7; do echo "line $i" >&2; done
echo "no such tool: frobnicate" >&2
exit 3
```

## assistant

```bash
echo never
```
"""


def test_a_failed_setup_script_fails_the_run_with_its_last_lines(project, cli):
    project({"sessions/broken.md": SETUP_FAILS})
    code, _, err = cli("import", "sessions/broken.md", "--tag", "broken")
    assert code == 0, err
    code, out, err = cli("run", "broken")
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("domarkx: error: sessions/broken.md:1: instance "), err
    assert first.endswith("the setup script failed with exit status 3:"), err
    # The last lines it wrote, indented under the error; not the ones before them.
    assert "\n  line 4\n  line 5\n  line 6\n  line 7\n  no such tool: frobnicate\n" in err
    assert "line 3" not in err and "Traceback" not in err

    # The instance keeps the setup's output; no block ran after it.
    store = Store(project() / ".domarkx", project())
    (instance_id,) = store.instance_ids()
    instance = store.get_instance(instance_id)
    assert instance.status == "failed"
    assert [o.text for o in instance.setup_output] == [
        "preparing",
        "\n".join([*(f"line {i}" for i in range(1, 8)), "no such tool: frobnicate"]),
    ]
    assert not any(isinstance(b, OutputBlock) for m in instance.conversation for b in m.content)
