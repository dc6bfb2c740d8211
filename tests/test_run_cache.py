"""The build's execution cache (``domarkx.pipeline.run_cache``), against real runs.

Snapshots are imported from real documents and run on the local shell engine;
what a test checks is what a build would: whether a run happens again, and
whether the instance given back from a record is the one the run made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domarkx.data.models import SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.pipeline.run_cache import (
    RUN_RECORD_FORMAT,
    RunCache,
    RunRecord,
    build_instance_id,
    run_for_build,
    run_key,
)
from domarkx.session.instance import InstanceManager
from domarkx.session.snapshot import SnapshotManager

# Every block appends to ran.log, so a test sees which runs really happened.
DOC = """\
```yaml session-config
timeout: {timeout}
```

## user

{prose}

## assistant

Two blocks in one message, then one more.

```bash
echo one; echo one >> ran.log
```

```python
print("two"); open("ran.log", "a").write("two\\n")
```

Between.

```bash
echo three >&2; echo three >> ran.log; exit {status}
```
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    (tmp_path / "sessions").mkdir()
    return Store(tmp_path / ".domarkx", tmp_path)


def snapshot_of(store: Store, prose: str = "Run these.", timeout: int = 20, status: int = 0):
    path = store.root / "sessions" / "s.md"
    path.write_text(DOC.format(prose=prose, timeout=timeout, status=status), encoding="utf-8")
    return SnapshotManager(store).import_file(path).snapshot


def ran(store: Store) -> list[str]:
    """The blocks that ran, from every instance's work folder, in order."""
    logs = sorted(store.home.glob("instances/*/work/ran.log"))
    return [line for log in logs for line in log.read_text().split()]


def comparable(instance: SessionInstance) -> list[dict]:
    """The conversation without the durations (they differ between runs)."""
    data = [m.model_dump(mode="json") for m in instance.conversation]
    for message in data:
        for block in message["content"]:
            block.pop("duration", None)
    return data


def test_the_key_covers_code_and_settings_but_not_prose(store):
    base = run_key(snapshot_of(store))
    assert run_key(snapshot_of(store, prose="Other words.")) == base
    assert run_key(snapshot_of(store, timeout=7)) != base
    assert run_key(snapshot_of(store, status=3)) != base  # the code changed


def test_with_a_model_the_prose_counts_too(store):
    path = store.root / "sessions" / "m.md"

    def key(prose: str) -> str:
        path.write_text(
            "```yaml session-config\nmodel:\n  provider: scripted\n  name: m\n```\n\n"
            f"## user\n\n{prose}\n",
            encoding="utf-8",
        )
        return run_key(SnapshotManager(store).import_file(path).snapshot)

    assert key("Hello.") != key("Goodbye.")


def test_a_record_gives_back_the_instance_the_run_made(store):
    snapshot = snapshot_of(store)
    manager = InstanceManager(store)
    ran_instance = manager.run(snapshot.snapshot_id)
    assert ran(store) == ["one", "two", "three"]

    record = RunRecord.of(snapshot, ran_instance, store)
    assert record.format == RUN_RECORD_FORMAT
    assert [[o.text for o in outs] for outs in record.outputs] == [["one"], ["two"], ["", "three"]]
    key = run_key(snapshot)
    RunCache(store).save(key, record)

    found = RunCache(store).lookup(key, snapshot)
    assert found == record
    again = found.instance(snapshot, "b" * 64, "2026-01-01T00:00:00+00:00")
    assert comparable(again) == comparable(ran_instance)
    assert again.status == "exited" and again.sandbox == {"alive": False, "cached": True}


def test_a_build_runs_once_and_a_prose_edit_is_a_hit(store):
    manager = InstanceManager(store)
    first = run_for_build(manager, snapshot_of(store).snapshot_id)
    assert ran(store) == ["one", "two", "three"]
    edited = snapshot_of(store, prose="Reworded, same code.")
    second = run_for_build(manager, edited.snapshot_id)
    assert ran(store) == ["one", "two", "three"]  # nothing ran again
    assert second.sandbox["cached"] is True
    assert second.instance_id == build_instance_id(edited.snapshot_id, run_key(edited))
    assert comparable(second)[1:] == comparable(first)[1:]  # the same outputs, new prose
    assert second.conversation[0] == edited.conversation[0]


def test_a_failed_run_is_not_recorded(store):
    snapshot = snapshot_of(store, status=4)
    manager = InstanceManager(store)
    assert run_for_build(manager, snapshot.snapshot_id).status == "failed"
    assert not RunCache(store).path(run_key(snapshot)).exists()
    run_for_build(manager, snapshot.snapshot_id)
    assert ran(store) == ["one", "two", "three"] * 2  # the next build tries again


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: {**data, "format": 1},
        lambda data: {**data, "outputs": "not a list"},
        lambda data: {**data, "replay": {"k" * 64: "0" * 64}, "llm_records": ["k" * 64]},
    ],
    ids=["older format", "malformed", "a replay record it used changed"],
)
def test_a_record_that_cannot_answer_is_a_miss(store, damage, monkeypatch):
    # Without turn layers, so that a miss shows as every block running again
    # (with them, the miss resumes from the last layer: tests/test_layers.py).
    monkeypatch.setenv("DOMARKX_LAYERS", "0")
    snapshot = snapshot_of(store)
    manager = InstanceManager(store)
    run_for_build(manager, snapshot.snapshot_id)
    path = RunCache(store).path(run_key(snapshot))
    path.write_text(json.dumps(damage(json.loads(path.read_text()))), encoding="utf-8")
    assert RunCache(store).lookup(run_key(snapshot), snapshot) is None
    run_for_build(manager, snapshot.snapshot_id)
    assert ran(store) == ["one", "two", "three"] * 2


def test_a_record_that_is_not_json_is_a_miss(store):
    snapshot: SessionSnapshot = snapshot_of(store)
    path = RunCache(store).path(run_key(snapshot))
    path.parent.mkdir(parents=True)
    path.write_text("{half a record", encoding="utf-8")
    assert RunCache(store).lookup(run_key(snapshot), snapshot) is None
