"""Turn layers: a run starts from the sandbox saved after the deepest message it shares.

Spec (layers-checks-scale) section 1. As each instruction of a Dockerfile is
a layer of an image, the sandbox after each message that ran something is a
layer, keyed by the chain of what ran:

- layer 0 (after the setup script): the setup script and the engine's
  settings (engine, image, network, limits, environment, timeout, on_error);
- the layer of message k: layer k-1's key and what message k ran (its
  runnable blocks and tool calls, in order). Prose, model metadata and
  recorded outputs are not in the key.

A run (``run``, a build, ``chat``) starts from the deepest layer of its
chain that is there and restorable, takes the outputs of the blocks up to it
from the layer's record (so its export is what a run from scratch gives) and
runs only the later blocks, saving a layer after each message. A layer whose
state cannot be saved whole (a global that does not pickle, a process left
running, an open file) is recorded with the reason and never started from.
A layer that fails to come back is marked so, and the run starts earlier.

Code that does not run is in the key (``layer_keys``): a refusal the document
records, a model's block that ``approve = "never"`` refuses. A refusal the key
did not foresee (the user's "no" during the run) or a timeout (the processes
restarted) ends the saving of layers for the rest of the run.

A run with checks runs the ``sh`` and ``python`` checks of a turn in the
sandbox after it: their code is in the keys, and what they did (exit status,
output) in the record of every layer saved after them, so a run resumed from
a layer gives the turns before it the results a run from scratch gives
(``session.check_run``; the other kinds are evaluated again on the document).

Off with ``layers: false`` in session-config or ``DOMARKX_LAYERS=0``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from domarkx import config as project_config
from domarkx.data.layers import LayerStore
from domarkx.data.models import Message, OutputBlock, SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.execution import layer_state
from domarkx.execution.engine import BlockResult, Engine, canonical_language
from domarkx.session.blocks import BlockRef, attach_outputs, now, runnable_blocks
from domarkx.session.layer_keys import (
    Step,
    chain,
    enabled,
    not_run_blocks,
    outputs_of_blocks,
)

# A file in a layer's folder saying it failed to come back (written once, never removed).
BROKEN = "broken"


@dataclass
class Resume:
    """The layer a run starts from."""

    step: Step | None  # None: layer 0
    key: str
    record: dict[str, Any]


@dataclass
class LayerRun:
    """Layers of one instance's run: where it started, what it saves as it goes."""

    layers: LayerStore
    snapshot: SessionSnapshot
    max_size: int
    # The run's grant refuses model-written code (``approve = "never"``): in the keys.
    never: bool = False
    # The run runs the session's checks: their sandbox code is in the keys.
    checks: bool = False
    # What the sandbox checks did so far in the run (from the layer it started from, then
    # its own): in the record of each layer it saves.
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    resume: Resume | None = None
    # Set once something ran that a layer must not hold (a refusal the keys did not
    # foresee, a timeout).
    broken: bool = False
    saved: list[str] = field(default_factory=list)
    save_seconds: float = 0.0
    _steps: tuple[str, dict[int, Step]] | None = None
    _unrun: list[bool] | None = None

    @property
    def skip(self) -> int:
        """Runnable blocks whose outputs come from the layer: they do not run."""
        if self.resume is None or self.resume.step is None:
            return 0
        return self.resume.step.blocks

    # Starting ---------------------------------------------------------------------
    def candidates(self, engine: type[Engine]) -> list[tuple[Step | None, str]]:
        """Layers of the snapshot's chain, deepest first (layer 0 last)."""
        key0, steps = chain(
            self.snapshot, self.snapshot.conversation, engine, never=self.never, checks=self.checks
        )
        found: list[tuple[Step | None, str]] = [(s, s.key) for s in reversed(steps)]
        if self.snapshot.setup_script is not None:
            found.append((None, key0))
        return found

    def usable(self, key: str, engine: type[Engine]) -> dict[str, Any] | None:
        record = self.layers.get(key)
        if record is None or not record.get("restorable"):
            return None
        if (self.layers.folder(key) / BROKEN).exists():
            return None
        if engine.files_missing(record.get("files") or {}, self.layers.objects) is not None:
            return None
        return record

    def choose(self, engine: type[Engine], skip: set[str]) -> Resume | None:
        """The deepest layer to start from, other than those in ``skip``."""
        for step, key in self.candidates(engine):
            if key in skip:
                continue
            record = self.usable(key, engine)
            if record is not None:
                return Resume(step, key, record)
        return None

    def mark_broken(self, key: str, reason: str) -> None:
        with contextlib.suppress(OSError):
            (self.layers.folder(key) / BROKEN).write_text(reason + "\n", encoding="utf-8")

    def restore(self, sandbox: Engine) -> None:
        """Bring the chosen layer's state back in ``sandbox`` (started from its files)."""
        assert self.resume is not None
        state = layer_state.SavedState.from_dict(self.resume.record.get("state") or {})
        setup = self.snapshot.setup_script
        language = canonical_language(setup.language) if setup is not None else None
        script = (language, setup.code) if setup is not None and language else None
        layer_state.restore(sandbox, state, script)
        self.layers.touch(self.resume.key)

    def recorded(self) -> tuple[list[OutputBlock], list[list[OutputBlock]]]:
        """The setup script's outputs and each skipped block's, from the layer."""
        assert self.resume is not None
        data = self.resume.record.get("record") or {}
        setup = [OutputBlock.model_validate(o) for o in data.get("setup_output") or []]
        outputs = [
            [OutputBlock.model_validate(o) for o in outs] for outs in data.get("outputs") or []
        ]
        return setup, outputs[: self.skip]

    def attach(
        self, conversation: list[Message], engine: Engine
    ) -> list[tuple[int, int, list[OutputBlock]]]:
        """Put the layer's outputs after the skipped blocks; what was attached, where."""
        _, outputs = self.recorded()
        refs = list(runnable_blocks(conversation, engine))[: len(outputs)]
        attached = []
        for ref, outs in reversed(list(zip(refs, outputs, strict=False))):
            conversation[ref.message] = attach_outputs(conversation[ref.message], ref.index, outs)
        # Indexes after attaching (outputs move later blocks down).
        for ref, outs in zip(runnable_blocks(conversation, engine), outputs, strict=False):
            attached.append((ref.message, ref.index, outs))
        return attached

    def begin(self, instance: SessionInstance, sandbox: Engine, store: Store) -> bool:
        """Started from a layer: its outputs of the setup script and of the blocks up to
        it go in the instance (and its journal), and True. Else False: run from the start.
        """
        if self.resume is None:
            return False
        setup, _ = self.recorded()
        data = self.resume.record.get("record") or {}
        self.check_runs = list(data.get("checks") or [])
        instance.setup_output = setup
        store.append_setup_output(instance.instance_id, setup)
        for m, index, outs in self.attach(instance.conversation, sandbox):
            store.append_outputs(instance.instance_id, m, index, outs)
        return True

    # Checks -----------------------------------------------------------------------
    @property
    def message(self) -> int | None:
        """The message of the layer the run started from (None: it started before any)."""
        if self.resume is None or self.resume.step is None:
            return None
        return self.resume.step.message

    def check_ran(self, language: str, code: str, result: BlockResult) -> None:
        """A sandbox check ran: it goes in the record of the layers saved after it."""
        if result.timed_out:
            self.broken = True  # the processes restarted
        self.check_runs.append(
            {
                "language": language,
                "code": code,
                "stdout": result.stdout,
                "stderr": result.stderr,
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
            }
        )

    def recorded_checks(self) -> list[tuple[str, str, BlockResult]]:
        """What the sandbox checks before the layer did, in order, from its record."""
        assert self.resume is not None
        data = self.resume.record.get("record") or {}
        found = []
        for item in data.get("checks") or []:
            result = BlockResult(
                stdout=str(item.get("stdout") or ""),
                stderr=str(item.get("stderr") or ""),
                exit_code=item.get("exit_code"),
                duration=0.0,
                timed_out=bool(item.get("timed_out")),
            )
            found.append((str(item.get("language")), str(item.get("code")), result))
        return found

    # Saving -----------------------------------------------------------------------
    def steps(self, sandbox: Engine) -> tuple[str, dict[int, Step]]:
        """Layer 0's key and the document's steps by the number of blocks up to them."""
        if self._steps is None:
            key0, steps = chain(
                self.snapshot,
                self.snapshot.conversation,
                sandbox,
                never=self.never,
                checks=self.checks,
            )
            own: dict[int, Step] = {}
            before = 0
            for s in steps:  # a message of tool calls alone runs nothing here
                if s.blocks > before:
                    own[s.blocks] = s
                before = s.blocks
            self._steps = (key0, own)
        return self._steps

    def after_setup(self, instance: SessionInstance, sandbox: Engine) -> None:
        """Layer 0, when there is a setup script and the run did not start later."""
        if self.snapshot.setup_script is None or self.resume is not None:
            return
        key0, _ = self.steps(sandbox)
        self.save(sandbox, key0, None, None, instance.setup_output, [])

    def after_block(
        self, instance: SessionInstance, sandbox: Engine, ref: BlockRef, done: int
    ) -> None:
        """After the ``done``-th runnable block: the layer of its message, if it was the last."""
        if self._unrun is None:
            self._unrun = not_run_blocks(self.snapshot.conversation, sandbox, never=self.never)
        foreseen = done <= len(self._unrun) and self._unrun[done - 1]
        for block in instance.conversation[ref.message].content[ref.index + 1 :]:
            if not isinstance(block, OutputBlock):
                break
            if block.timed_out or (block.refused and not foreseen):
                self.broken = True  # the processes restarted, or the keys said it ran
        key0, steps = self.steps(sandbox)
        step = steps.get(done)
        if step is None or step.message != ref.message:
            return
        ordered = sorted(steps.values(), key=lambda s: s.blocks)
        at = ordered.index(step)
        parent = ordered[at - 1].key if at else key0
        outputs = list(outputs_of_blocks(instance.conversation, sandbox))[:done]
        self.save(sandbox, step.key, parent, step.message, instance.setup_output, outputs)

    def after_model(self, instance: SessionInstance, sandbox: Engine, before: int) -> None:
        """After a model turn that added the messages from ``before`` on: the layer of the
        last one that ran something. Its refusals are in the conversation, so in the key
        (the document records them); a block that timed out leaves no layer.
        """
        for message in instance.conversation[before:]:
            if any(isinstance(b, OutputBlock) and b.timed_out for b in message.content):
                self.broken = True  # the processes restarted
        key0, steps = chain(
            self.snapshot, instance.conversation, sandbox, never=self.never, checks=self.checks
        )
        if not steps or steps[-1].message < max(before, len(self.snapshot.conversation)):
            return
        parent = steps[-2].key if len(steps) > 1 else key0
        outputs = list(outputs_of_blocks(instance.conversation, sandbox))
        self.save(sandbox, steps[-1].key, parent, steps[-1].message, instance.setup_output, outputs)

    def save(
        self,
        sandbox: Engine,
        key: str,
        parent: str | None,
        message: int | None,
        setup_output: list[OutputBlock],
        outputs: list[list[OutputBlock]],
    ) -> None:
        """Save the sandbox as layer ``key`` (nothing when it is there already)."""
        if self.broken or not sandbox.layers_supported or self.layers.exists(key):
            return
        started = time.monotonic()
        setup = self.snapshot.setup_script
        python_setup = setup is not None and canonical_language(setup.language) == "python"
        state = layer_state.capture(
            sandbox, setup.code if setup is not None and python_setup else None
        )
        reasons = list(state.reasons)
        files: dict[str, Any] = {}
        size = 0
        if not reasons:  # the files of a layer that cannot restore are not worth keeping
            files, size, more = sandbox.save_files(self.layers.objects)
            reasons += more
        size += len(state.shell or "") + len(state.python or "")
        record = {
            "key": key,
            "parent": parent,
            "message": message,
            "engine": sandbox.name,
            "restorable": not reasons,
            "reasons": reasons,
            "size": size,
            "created": now(),
            "files": files,
            "state": state.as_dict(),
            "record": {
                "setup_output": [o.model_dump(mode="json") for o in setup_output],
                "outputs": [[o.model_dump(mode="json") for o in outs] for outs in outputs],
                "checks": list(self.check_runs),
            },
        }
        if self.layers.put(key, record):
            self.saved.append(key)
            bound_size(self.layers, self.max_size, keep={key}, forget=forget_for(sandbox))
        self.save_seconds += time.monotonic() - started


def forget_for(engine: Engine | type[Engine]) -> Callable[[dict[str, Any]], None]:
    cls = engine if isinstance(engine, type) else type(engine)
    host = None
    project = getattr(engine, "project", None)
    if project is not None:
        host = project.docker.host

    def forget(record: dict[str, Any]) -> None:
        with contextlib.suppress(DomarkxError, OSError):
            cls.forget_files(record.get("files") or {}, host)

    return forget


def bound_size(
    layers: LayerStore,
    max_size: int,
    keep: set[str],
    forget: Callable[[dict[str, Any]], None],
) -> list[str]:
    """Remove least recently used layers until they hold at most ``max_size`` bytes."""
    sizes = {}
    for key in layers.all_keys():
        record = layers.get(key)
        if record is not None:
            sizes[key] = int(record.get("size") or 0)
    total = sum(sizes.values())
    removed: list[str] = []
    if total <= max_size:
        return removed
    for key in sorted(sizes, key=lambda k: layers.last_used(k) or 0.0):
        if total <= max_size:
            break
        if key in keep:
            continue
        record = layers.remove(key)
        if record is not None:
            forget(record)
        total -= sizes[key]
        removed.append(key)
    if removed:
        layers.collect_objects()
    return removed


def start_sandbox(
    store: Store,
    snapshot: SessionSnapshot,
    make: Callable[[], Engine],
    *,
    never: bool = False,
    checks: bool = False,
) -> tuple[LayerRun | None, Engine, dict[str, Any]]:
    """The run's layers and its started sandbox: from the deepest usable layer, else
    from scratch. A layer whose state does not come back is marked broken and the
    next one down is tried, down to an empty sandbox. ``never``: the run's grant
    refuses model-written code (``approve = "never"``); ``checks``: the run runs the
    session's checks.
    """
    run = layer_run(store, snapshot, never=never, checks=checks)
    project = project_config.load(store.root)
    tried: set[str] = set()
    while True:
        engine = make()
        engine.project = project
        if run is not None:
            cls = type(engine)
            run.resume = run.choose(cls, tried) if cls.layers_supported else None
            if run.resume is not None:
                engine.use_files(run.resume.record.get("files") or {}, run.layers.objects)
        handle = engine.start()
        if run is None or run.resume is None:
            return run, engine, handle
        try:
            run.restore(engine)
            return run, engine, handle
        except layer_state.RestoreError as err:
            run.mark_broken(run.resume.key, str(err))
            tried.add(run.resume.key)
            engine.stop()


def to_run(run: LayerRun | None, instance: SessionInstance, sandbox: Engine) -> Iterator[BlockRef]:
    """The runnable blocks after the layer a run started from, saving layers on the way.

    Layer 0 is saved before the first block; a message's layer once its last block
    ran (the caller asks for the next block only when the last one did not stop it).
    """
    if run is not None:
        run.after_setup(instance, sandbox)
    for done, ref in enumerate(runnable_blocks(instance.conversation, sandbox), 1):
        if run is None:
            yield ref
            continue
        if done <= run.skip:
            continue
        yield ref
        run.after_block(instance, sandbox, ref, done)


def layer_run(
    store: Store, snapshot: SessionSnapshot, *, never: bool = False, checks: bool = False
) -> LayerRun | None:
    """The layers of a run of ``snapshot`` (None: layers are off for it)."""
    if not enabled(snapshot):
        return None
    settings = project_config.load(store.root).layers
    return LayerRun(
        LayerStore(store.layout),
        snapshot,
        project_config.size_in_bytes(settings.max_size),
        never=never,
        checks=checks,
    )
