"""A run records each block as it ends: a killed run keeps every block that finished."""

from __future__ import annotations

import subprocess
import sys

from domarkx.data.atomic import write_atomic
from domarkx.data.models import OutputBlock, SessionInstance
from domarkx.data.store import Store
from tests.chat_server import ChatServer
from tests.support import process_env

BLOCKS_BEFORE_KILL = 25


def killed_session() -> str:
    """Blocks that echo, then one that SIGKILLs the ``domarkx run`` running it, then more."""
    blocks = "".join(f"```bash\necho out-{i}\n```\n\n" for i in range(BLOCKS_BEFORE_KILL))
    blocks += "```bash\nkill -KILL $PPID\nsleep 1\n```\n\n"
    blocks += "```bash\necho never\n```\n"
    return "## user\n\nRun them.\n\n## assistant\n\n" + blocks


def stdout_texts(instance: SessionInstance) -> list[str]:
    return [
        block.text
        for message in instance.conversation
        for block in message.content
        if isinstance(block, OutputBlock) and block.stream == "stdout"
    ]


def test_sigkill_mid_run_keeps_every_finished_block(project, cli):
    root = project({"sessions/long.md": killed_session()})
    code, _, err = cli("import", "sessions/long.md", "--tag", "long")
    assert code == 0, err
    env = process_env()
    done = subprocess.run(
        [sys.executable, "-m", "domarkx", "run", "long"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr  # killed by the block, not ended

    store = Store(root / ".domarkx", root)
    (instance_id,) = store.instance_ids()
    instance = store.get_instance(instance_id)
    assert instance.status == "running"
    expected = [f"out-{i}" for i in range(BLOCKS_BEFORE_KILL)]
    assert stdout_texts(instance) == expected

    # What every reader shows: the listing and the export.
    code, listing, err = cli("instances", "--all")
    assert code == 0, err
    assert instance_id[:12] in listing
    code, exported, err = cli("export", instance_id[:12])
    assert code == 0, err
    for text in expected:
        assert f"```text output exit_code=0\n{text}\n```" in exported
    assert "never\n```" not in exported.split("echo never")[-1]

    # A process killed while appending leaves a line without its newline: left out.
    with open(root / ".domarkx" / "instances" / instance_id / "journal.jsonl", "ab") as handle:
        handle.write(b'{"outputs":[1,0,[{"type":"output","te')
    assert stdout_texts(store.get_instance(instance_id)) == expected

    # Stopping it writes the instance whole; the outputs stay.
    code, _, err = cli("stop", instance_id[:12])
    assert code == 0, err
    stopped = store.get_instance(instance_id)
    assert stopped.status == "stopped"
    assert stdout_texts(stopped) == expected


def test_the_journal_replayed_over_a_file_that_holds_it_changes_nothing(project, cli):
    # A run killed after writing the whole instance but before removing the journal.
    root = project(
        {"sessions/two.md": "## assistant\n\n```bash\necho one\n```\n\n```bash\necho two\n```\n"}
    )
    code, _, err = cli("import", "sessions/two.md", "--tag", "two")
    assert code == 0, err
    code, instance_id, err = cli("run", "two")
    assert code == 0, err
    store = Store(root / ".domarkx", root)
    instance_id = instance_id.strip()
    finished = store.get_instance(instance_id)
    assert stdout_texts(finished) == ["one", "two"]

    bare = finished.model_copy(deep=True)
    bare.conversation[0] = bare.conversation[0].model_copy(
        update={"content": [b for b in bare.conversation[0].content if b.type == "code"]}
    )
    store.put_instance(bare)
    assert stdout_texts(store.get_instance(instance_id)) == []
    one, two = (b for b in finished.conversation[0].content if isinstance(b, OutputBlock))
    store.append_outputs(instance_id, 0, 0, [one])
    store.append_outputs(instance_id, 0, 2, [two])
    assert store.get_instance(instance_id) == finished
    write_atomic(store.instance_dir(instance_id) / "instance.json", finished.to_json())
    assert store.get_instance(instance_id) == finished


MODEL_SESSION = """
```yaml session-config
timeout: 20
model:
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
```

## user

> Run these {blocks} blocks.
"""

GRANT = """\
[endpoints.test]
base_url = "{base_url}"
api_key_env = "DOMARKX_TEST_KEY"
"""


def journal_bytes_of_a_reply(project, cli, blocks: int) -> int:
    """The size of the instance's journal when the last of ``blocks`` code blocks of one
    model reply runs: that block prints it (the sandbox works in ``<instance>/work``)."""
    reply = "".join(f"```bash\necho {i}\n```\n\n" for i in range(blocks))
    reply += "```bash\nwc -c < ../journal.jsonl\n```\n"
    with ChatServer() as server:
        project(
            {
                "sessions/many.md": MODEL_SESSION.format(base_url=server.base_url, blocks=blocks),
                "domarkx.toml": GRANT.format(base_url=server.base_url),
            }
        )
        server.reply(reply, "Done.")
        env = {"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM_RETRIES": "0"}
        code, _, err = cli("import", "sessions/many.md", "--tag", "many", env=env)
        assert code == 0, err
        code, out, err = cli("run", "--yes", "many", env=env)
        assert code == 0, err
    code, exported, err = cli("export", out.strip())
    assert code == 0, err
    assert f"```bash\necho {blocks - 1}\n```\n\n```text output exit_code=0\n{blocks - 1}\n```" in (
        exported
    )
    last = exported.split("wc -c < ../journal.jsonl\n```\n\n```text output exit_code=0\n")[1]
    return int(last.split("\n", 1)[0])


def test_a_reply_with_many_code_blocks_grows_the_journal_linearly(project, cli):
    """Each block's outputs are journaled alone, not the whole reply again after each one:
    eight times the blocks make about eight times the journal (it was ~60 times)."""
    small = journal_bytes_of_a_reply(project, cli, 20)
    large = journal_bytes_of_a_reply(project, cli, 160)
    assert small > 0
    assert large < 12 * small, (small, large)


def test_sigkill_during_a_reply_keeps_each_of_its_blocks_that_finished(project, cli):
    reply = "".join(f"```bash\necho reply-{i}\n```\n\n" for i in range(5))
    reply += "```bash\nkill -KILL $PPID\nsleep 1\n```\n\n```bash\necho never\n```\n"
    with ChatServer() as server:
        root = project(
            {
                "sessions/many.md": MODEL_SESSION.format(base_url=server.base_url, blocks=6),
                "domarkx.toml": GRANT.format(base_url=server.base_url),
            }
        )
        server.reply(reply)
        code, _, err = cli("import", "sessions/many.md", "--tag", "many")
        assert code == 0, err
        done = subprocess.run(
            [sys.executable, "-m", "domarkx", "run", "--yes", "many"],
            cwd=root,
            env=process_env({"DOMARKX_TEST_KEY": "sk-test", "DOMARKX_LLM_RETRIES": "0"}),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == -9, done.stderr  # killed by the block, not ended

    store = Store(root / ".domarkx", root)
    (instance_id,) = store.instance_ids()
    instance = store.get_instance(instance_id)
    assert instance.conversation[-1].role == "assistant"
    assert stdout_texts(instance) == [f"reply-{i}" for i in range(5)]
