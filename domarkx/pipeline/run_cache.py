"""The build's execution cache: one record per run key in ``cache/run/_keys/<key>.json``.

A build runs a snapshot only when no record answers for it. The key covers
what decides the outputs (setup script, runnable blocks in order, engine
settings, and with a model the whole conversation); the record holds what
the run added to the snapshot: each runnable block's outputs, the messages
appended after it, and the model replies it used (by digest, so that a new
recording of one of them runs the session again). A failed run is never
recorded: like a failed make target, the next build retries it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from domarkx import config as project_config
from domarkx.data.atomic import write_atomic
from domarkx.data.digest import digest
from domarkx.data.models import (
    CodeBlock,
    InstanceStatus,
    Message,
    OutputBlock,
    SessionInstance,
    SessionSnapshot,
)
from domarkx.data.store import Store
from domarkx.errors import EngineError, RefError
from domarkx.execution.engine import canonical_language, engine_class
from domarkx.llm.replay import ReplayCache, mode_from_env
from domarkx.pipeline import durations, run_share
from domarkx.session.approval import waited
from domarkx.session.blocks import attach_outputs, now, runnable_blocks
from domarkx.session.instance import InstanceManager

# The version of the record layout; 1 had outputs misplaced when a message held
# several runnable blocks. A record of another format is a miss.
RUN_RECORD_FORMAT = 2


class RunRecord(BaseModel):
    """What a finished run added to its snapshot, enough to give the instance back."""

    model_config = ConfigDict(extra="ignore")
    format: int  # RUN_RECORD_FORMAT when written
    status: InstanceStatus
    error: str | None = None
    setup_output: list[OutputBlock] = []
    # One list per runnable block of the snapshot, in order: the outputs after it.
    outputs: list[list[OutputBlock]] = []
    # Messages the run appended (the model's turns and what their code printed).
    appended: list[Message] = []
    # Replay keys of the model replies used, and the digest of each record (None: missing).
    llm_records: list[str] = []
    replay: dict[str, str | None] = {}
    # Check results the run wrote into the document's own messages (session.check_run),
    # by message index; those of appended messages are in ``appended``.
    checks: dict[int, list[Any]] = {}
    # How long the run took where it ran (None: not known); balances shards (``durations``).
    seconds: float | None = None

    @classmethod
    def of(
        cls,
        snapshot: SessionSnapshot,
        instance: SessionInstance,
        store: Store,
        seconds: float | None = None,
    ) -> RunRecord:
        """The record of ``instance``, a finished run of ``snapshot`` that took ``seconds``."""
        engine = engine_class(instance.engine)
        # Positions in the instance, where earlier blocks' outputs have moved later
        # blocks down; the blocks and their order are the snapshot's.
        ran = instance.conversation[: len(snapshot.conversation)]
        outputs: list[list[OutputBlock]] = []
        for ref in runnable_blocks(ran, engine):
            content = instance.conversation[ref.message].content
            outs: list[OutputBlock] = []
            for block in content[ref.index + 1 :]:
                if not isinstance(block, OutputBlock):
                    break
                outs.append(block)
            outputs.append(outs)
        return cls(
            format=RUN_RECORD_FORMAT,
            status=instance.status,
            error=instance.error,
            setup_output=list(instance.setup_output),
            outputs=outputs,
            appended=instance.conversation[len(snapshot.conversation) :],
            llm_records=list(instance.llm_records),
            replay=replay_digests(store, instance.llm_records),
            checks={
                i: m.message_metadata["checks"]
                for i, m in enumerate(ran)
                if m.message_metadata and "checks" in m.message_metadata
            },
            seconds=None if seconds is None else round(seconds, 3),
        )

    def instance(self, snapshot: SessionSnapshot, instance_id: str, stamp: str) -> SessionInstance:
        """The instance this record stands for: the snapshot with the outputs put back."""
        engine = engine_class(snapshot.config().engine)
        conversation = [m.model_copy(deep=True) for m in snapshot.conversation]
        refs = list(runnable_blocks(conversation, engine))
        # Attach from the last block backwards so earlier indexes stay valid.
        for ref, outs in reversed(list(zip(refs, self.outputs, strict=False))):
            if outs:
                blocks = [o.model_copy() for o in outs]
                conversation[ref.message] = attach_outputs(
                    conversation[ref.message], ref.index, blocks
                )
        for index, results in self.checks.items():
            if index < len(conversation):
                message = conversation[index]
                metadata = {**(message.message_metadata or {}), "checks": results}
                conversation[index] = message.model_copy(update={"message_metadata": metadata})
        conversation += [m.model_copy(deep=True) for m in self.appended]
        return SessionInstance(
            instance_id=instance_id,
            snapshot_id=snapshot.snapshot_id,
            status=self.status,
            engine=snapshot.config().engine,
            created_at=stamp,
            started_at=stamp,
            finished_at=stamp,
            error=self.error,
            setup_output=[o.model_copy() for o in self.setup_output],
            conversation=conversation,
            llm_records=list(self.llm_records),
            sandbox={"alive": False, "cached": True}
            | ({} if self.seconds is None else {"seconds": self.seconds}),
        )


def run_key(snapshot: SessionSnapshot, checks: Mapping[str, Any] | None = None) -> str:
    """Key of a run: setup script, runnable blocks in order, engine settings.

    With a model configured, the whole conversation counts too, since the
    model reads the prose. A session with checks adds its expect blocks and
    ``checks``, the project's ``[checks]`` settings (the judge's endpoint,
    model and prompt decide its verdicts).
    """
    config = snapshot.config()
    engine = engine_class(config.engine)
    blocks = []
    for ref in runnable_blocks(snapshot.conversation, engine):
        block = snapshot.conversation[ref.message].content[ref.index]
        assert isinstance(block, CodeBlock)
        blocks.append([canonical_language(block.language) or block.language, block.code])
    data: dict[str, Any] = {
        "setup": snapshot.setup_script.model_dump() if snapshot.setup_script else None,
        "blocks": blocks,
        "engine": engine.settings_key(config),
        "timeout": config.timeout,
        "on_error": config.on_error,
    }
    expects = [
        block.code
        for message in snapshot.conversation
        if message.role == "user"
        for block in message.content
        if isinstance(block, CodeBlock) and "expect" in block.flags
    ]
    if expects:  # a session's checks decide its results too (session.check_run)
        data["checks"] = expects
        data["checks_settings"] = dict(checks or {})
    if config.model is not None:
        data["model"] = config.model.model_dump(mode="json")
        data["conversation"] = [m.model_dump(mode="json") for m in snapshot.conversation]
        data["front_matter"] = snapshot.metadata.user_metadata
        data["tools"] = config.tools
    return digest(data)


def checks_settings(store: Store, snapshot: SessionSnapshot) -> dict[str, Any] | None:
    """The project's ``[checks]`` settings when ``snapshot`` has checks (None: it has none)."""
    if not any(
        "expect" in block.flags
        for message in snapshot.conversation
        if message.role == "user"
        for block in message.content
        if isinstance(block, CodeBlock)
    ):
        return None  # no configuration to read for the common session
    return project_config.load(store.root).checks.model_dump(mode="json")


def build_instance_id(snapshot_id: str, key: str, session: str | None = None) -> str:
    """The id of a build's instance: one per session, snapshot and run key.

    The session's name is part of it because two sessions with the same
    content (one snapshot, one run key) run side by side in a threaded build:
    a shared id would have each overwrite the other's instance and sandbox
    record. They still share the execution cache, which is keyed by run key.
    """
    text = (
        f"build:{snapshot_id}:{key}" if session is None else f"build:{snapshot_id}:{key}:{session}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


def replay_digests(store: Store, keys: list[str]) -> dict[str, str | None]:
    """The content digest of each replay record a run used (None: missing)."""
    cache = ReplayCache(store.replay_dir, mode="auto")
    digests: dict[str, str | None] = {}
    for key in keys:
        try:
            digests[key] = hashlib.sha256(cache.path_for(key).read_bytes()).hexdigest()
        except OSError:
            digests[key] = None
    return digests


class RunCache:
    """The records of one store, by run key."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def path(self, key: str) -> Path:
        return Path(self.store.layout.abs(self.store.layout.run_record(key)))

    def lookup(self, key: str, snapshot: SessionSnapshot) -> RunRecord | None:
        """The record that answers for ``key``, or None when the run must happen.

        Here first, then in the shared cache (``[cache]``, ``run_share``).
        """
        path = self.path(key)
        if not path.exists():
            run_share.fetch_run(self.store, key, path)
        try:
            record = RunRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            return None  # none yet, or unreadable: run again
        if record.format != RUN_RECORD_FORMAT:
            return None  # written by an older domarkx: run again
        if record.replay != replay_digests(self.store, record.llm_records):
            return None  # a model reply it used was recorded anew (or deleted): run again
        if asks_anew(self.store, snapshot):
            return None  # DOMARKX_LLM=record or live asks the model again, cache or not
        return record

    def save(self, key: str, record: RunRecord) -> None:
        write_atomic(self.path(key), record.model_dump_json(indent=1) + "\n")
        run_share.share_run(self.store, key, self.path(key), record.llm_records)


def run_for_build(
    manager: InstanceManager, snapshot_id: str, session: str | None = None
) -> SessionInstance:
    """The finished instance of a snapshot, re-running only on an execution-cache miss.

    ``session`` (the build's session name) makes the instance that session's own.
    """
    snapshot, key, instance_id, cache, found = _lookup(manager, snapshot_id, session)
    layout = manager.store.layout
    if found is not None:
        durations.note(layout, session, found.sandbox.get("seconds"))
        return found
    instance = manager.create(snapshot, instance_id=instance_id)
    began = time.monotonic() - waited()  # the time at approval prompts is the user's
    manager.execute(instance, snapshot)
    seconds = time.monotonic() - waited() - began
    if (
        instance.status != "failed"
        and snapshot.snapshot_id not in manager.refused
        and not (asks_anew(manager.store, snapshot) and mode_from_env() == "live")
    ):
        # A failed run is not cached: like a failed make target, the next build retries
        # it; nor is one where the user refused code (a later grant runs it), nor a
        # live one, whose replies were not recorded (DOMARKX_LLM=live keeps nothing).
        cache.save(key, RunRecord.of(snapshot, instance, manager.store, seconds))
        # The snapshot it ran, for whoever meets its id elsewhere (``domarkx export ID``).
        manager.store.share_snapshot(snapshot.snapshot_id)
        durations.note(layout, session, seconds)
    return instance


def asks_anew(store: Store, snapshot: SessionSnapshot) -> bool:
    """Whether DOMARKX_LLM (record, live) asks this snapshot's model or judge again."""
    if mode_from_env() not in ("record", "live"):
        return False
    return snapshot.config().model is not None or checks_settings(store, snapshot) is not None


def build_instance(
    manager: InstanceManager, snapshot_id: str, session: str | None = None
) -> SessionInstance | None:
    """The instance of the build's last run of a snapshot for ``session`` (None: none).

    The one in the store, else the one the execution cache gives (nothing runs).
    """
    store = manager.store
    snapshot = store.get_snapshot(snapshot_id)
    key = run_key(snapshot, checks_settings(store, snapshot))
    try:
        return store.get_instance(build_instance_id(snapshot_id, key, session))
    except RefError:
        return cached_for_build(manager, snapshot_id, session)


def cached_for_build(
    manager: InstanceManager, snapshot_id: str, session: str | None = None
) -> SessionInstance | None:
    """The instance the execution cache gives for a snapshot, or None when it must run.

    Nothing runs here: no sandbox, no model, no approval to ask for.
    """
    found = _lookup(manager, snapshot_id, session)[-1]
    if found is not None:
        durations.note(manager.store.layout, session, found.sandbox.get("seconds"))
    return found


def _lookup(
    manager: InstanceManager, snapshot_id: str, session: str | None
) -> tuple[SessionSnapshot, str, str, RunCache, SessionInstance | None]:
    """A build's run of a snapshot: its cache key, instance id, and the cached instance."""
    store = manager.store
    snapshot = store.get_snapshot(snapshot_id)
    try:
        key = run_key(snapshot, checks_settings(store, snapshot))  # blocks: by engine
    except EngineError as err:
        manager.point_at_config(err, snapshot, "engine")
        raise
    instance_id = build_instance_id(snapshot_id, key, session)
    cache = RunCache(store)
    record = cache.lookup(key, snapshot)
    if record is None:
        return snapshot, key, instance_id, cache, None
    instance = record.instance(snapshot, instance_id, now())
    store.put_instance(instance)
    return snapshot, key, instance_id, cache, instance
