"""``InstanceManager``: run a snapshot in a sandbox, as ``docker run`` runs an image.

An instance is created from a snapshot (after pre-flight checks: every block
can run on the engine, the model is where this format keeps it, the sandbox
asks for nothing the user has not granted), gets its own sandbox from the
configured engine, runs the setup script and then the runnable code blocks in
order (spec section 1.4, ``session.blocks``), and asks the model for a turn
when the session ends with a user message (``session.model_turn``). Each
block's outputs are appended to the instance's journal as soon as it ends
(``Store.append_outputs``), so a crash loses nothing that ran, and the
instance file is written whole at the start and the end. Stopping, removing
and pruning are ``session.cleanup``'s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx import config as project_config
from domarkx.data.models import CodeBlock, OutputBlock, SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, EngineError
from domarkx.execution.engine import (
    INSTANCE_LABEL,
    PROJECT_LABEL,
    Engine,
    canonical_language,
    engine_class,
)
from domarkx.llm import builtin_tools
from domarkx.llm.endpoints import turns_refusal
from domarkx.llm.reply import needs_model
from domarkx.session import cleanup, owners
from domarkx.session import layers as turn_layers
from domarkx.session.approval import Approval, for_project
from domarkx.session.blocks import (
    BlockRef,
    attach_outputs,
    describe_block,
    granted,
    model_written,
    not_run,
    now,
    outputs_of,
    refused_before,
    runnable_blocks,
)
from domarkx.session.layer_keys import has_checks
from domarkx.session.legacy import check_model_source, read_source
from domarkx.session.locate import block_line, config_line, failed_block, setup_line

# How many of a failed setup script's last lines its error shows.
SETUP_ERROR_LINES = 5

if TYPE_CHECKING:
    from domarkx.session.check_run import CheckRun


class InstanceManager:
    """Creates, runs, stops and removes instances in one store."""

    def __init__(
        self,
        store: Store,
        echo: Callable[[str], None] | None = None,
        approval: Approval | None = None,
        replay_mode: str | None = None,
    ) -> None:
        self.store = store
        self.echo = echo  # progress lines for interactive runs; None keeps runs quiet
        # The user's grant for model-written code: given by the command (``--yes``), else
        # the project's configuration (``approve``), asking on a terminal; read when first
        # needed, so that `stop` or `prune` work whatever the configuration says.
        self._approval = approval
        # Snapshots whose run refused some code: not cached (a later grant runs it).
        self.refused: set[str] = set()
        # How model calls use the replay folder (None: DOMARKX_LLM decides); `chat
        # --regenerate` passes "record" to ask the model again and keep the new reply.
        self.replay_mode = replay_mode
        # Which sample of a check's `samples` this run asks for (session.check_run): 0 is
        # the run itself; each other sample has replay records of its own.
        self.sample = 0
        # The session tools a model may call (``domarkx.session.agents``), given by the
        # command that runs the session; None: the run offers none.
        self.host_tools: dict[str, builtin_tools.HostTool] | None = None
        self.layer_runs: dict[str, turn_layers.LayerRun | None] = {}  # by instance id

    @property
    def approval(self) -> Approval:
        if self._approval is None:
            self._approval = for_project(self.store.root)
        return self._approval

    @approval.setter
    def approval(self, value: Approval) -> None:
        self._approval = value

    # Creating, with the checks that come before anything starts ----------------
    def create(
        self, snapshot: SessionSnapshot, engine: str | None = None, instance_id: str | None = None
    ) -> SessionInstance:
        cleanup.refuse_when_exiting()
        config = snapshot.config()
        engine_name = engine or config.engine
        try:
            cls = engine_class(engine_name)
        except EngineError as err:  # unknown (a plugin that is broken is not the document's)
            if engine is None:  # the document's `engine:`, not --engine
                self.point_at_config(err, snapshot, "engine")
            raise
        self.check_languages(snapshot, cls)
        self.check_model_source(snapshot)
        self.check_grants(snapshot, cls)
        owners.register(self.store.home)
        instance = SessionInstance(
            instance_id=instance_id or secrets.token_hex(32),
            snapshot_id=snapshot.snapshot_id,
            engine=engine_name,
            created_at=now(),
            conversation=[m.model_copy(deep=True) for m in snapshot.conversation],
            # Who runs it, from the start: killed before its sandbox is recorded, the
            # instance is still found to be orphaned (``prune``, the next build).
            sandbox={"owner_pid": os.getpid()},
        )
        self.store.put_instance(instance)
        return instance

    def check_languages(self, snapshot: SessionSnapshot, cls: type[Engine]) -> None:
        """Blocks that must run but cannot are an error before anything starts."""
        setup = snapshot.setup_script
        if setup is not None and not cls.supports(setup.language):
            raise EngineError(
                f"the setup script's language {setup.language!r} cannot run "
                f"on the {cls.name} engine",
                file=snapshot.metadata.source_file,
                hint="write the setup script in bash or python",
            )
        for ref in runnable_blocks(snapshot.conversation, cls):
            block = snapshot.conversation[ref.message].content[ref.index]
            assert isinstance(block, CodeBlock)
            if not cls.supports(block.language):
                raise EngineError(
                    f"{describe_block(snapshot.conversation, ref)}: language "
                    f"{block.language!r} cannot run on the {cls.name} engine",
                    file=snapshot.metadata.source_file,
                    hint="use bash or python, or mark the block `norun`",
                )

    def check_model_source(self, snapshot: SessionSnapshot) -> None:
        """An older-format session whose model is a setup-script ``client`` cannot be asked."""
        if snapshot.config().model is not None or not needs_model(snapshot.conversation):
            return
        setup = snapshot.setup_script
        source_file = snapshot.metadata.source_file
        check_model_source(
            setup.language if setup else None,
            setup.code if setup else None,
            read_source(self.store.root, source_file) if setup else None,
            source_file,
        )

    def check_grants(self, snapshot: SessionSnapshot, cls: type[Engine]) -> None:
        """What the session asks of its sandbox or model and the user did not grant: an error."""
        config, project = snapshot.config(), project_config.load(self.store.root)
        source, refused = snapshot.metadata.source_file, cls.refusal(config, project)
        at = partial(config_line, self.store.root, source)
        if refused is not None:
            raise EngineError(refused.message, file=source, line=at(refused.key), hint=refused.hint)
        model = config.model
        if model and (too_many := turns_refusal(model, project, session=source, locate=at)):
            raise too_many

    # Running --------------------------------------------------------------------
    def start(
        self,
        instance: SessionInstance,
        snapshot: SessionSnapshot,
        *,
        keep: bool = False,
        checks: bool = False,
    ) -> Engine:
        """Start the sandbox, labelled with the instance and this project.

        ``keep`` is recorded: a kept sandbox outlives its run on purpose, any
        other one whose owner died is a leftover that ``prune`` removes.
        ``checks``: the run runs the session's checks (they are in its layers' keys).
        """
        config = snapshot.config()
        cls = engine_class(instance.engine)
        workdir = self.store.instance_dir(instance.instance_id) / "work"
        labels = {INSTANCE_LABEL: instance.instance_id, PROJECT_LABEL: self.store.project_id}
        try:  # from the deepest layer the document shares with an earlier run, if any
            make = partial(cls, config, workdir, labels=labels)
            layers, engine, handle = turn_layers.start_sandbox(
                self.store, snapshot, make, never=self.approval.mode == "never", checks=checks
            )
            self.layer_runs[instance.instance_id] = layers
        except BaseException as err:
            if isinstance(err, EngineError) and err.key is not None:
                self.point_at_config(err, snapshot, err.key)
            # Nothing ran: the instance did not get as far as a sandbox.
            instance.status = "failed"
            instance.error = str(err) if isinstance(err, DomarkxError) else type(err).__name__
            instance.finished_at = now()
            instance.sandbox = {"alive": False, "owner_pid": os.getpid()}
            self.store.put_instance(instance)
            raise
        instance.status = "running"
        instance.started_at = now()
        instance.sandbox = {"alive": True, **handle, "owner_pid": os.getpid(), "keep": keep}
        self.store.put_instance(instance)
        return engine

    def run(
        self,
        ref: str,
        *,
        engine: str | None = None,
        keep: bool = False,
        strict: bool = False,
        stream: Callable[[str], None] | None = None,
    ) -> SessionInstance:
        """``domarkx run``: create, run every block, ask the model, stop (unless ``keep``)."""
        snapshot = self.store.get_snapshot(self.store.resolve_snapshot(ref))
        instance = self.create(snapshot, engine)
        self.execute(instance, snapshot, keep=keep, stream=stream)
        if instance.status == "failed" and any(
            o.stream == "stdout" and (o.timed_out or o.exit_code != 0)
            for o in instance.setup_output
        ):
            self.raise_setup_failed(instance, snapshot)
        if strict:
            self.raise_for_failures(instance)
        return instance

    def raise_setup_failed(self, instance: SessionInstance, snapshot: SessionSnapshot) -> None:
        """A setup script that failed fails the run: nothing of the session could run."""
        source = snapshot.metadata.source_file
        short = instance.instance_id[:12]
        raise DomarkxError(
            f"instance {short}: {instance.error}",
            file=source,
            line=setup_line(self.store.root, source),
            hint=f"fix the setup script; `domarkx export {short}` shows its output",
        )

    def execute(
        self,
        instance: SessionInstance,
        snapshot: SessionSnapshot,
        *,
        keep: bool = False,
        stream: Callable[[str], None] | None = None,
    ) -> SessionInstance:
        """Run an instance to its end; the sandbox is destroyed unless ``keep``."""
        cleanup.refuse_when_exiting()
        sandbox = self.start(instance, snapshot, keep=keep, checks=has_checks(snapshot))

        def interrupted() -> None:
            instance.status = "failed"
            instance.error = instance.error or "interrupted: the process ended during the run"
            self.finish(instance, sandbox)

        cleanup.track(instance.instance_id, interrupted)
        try:
            checks = self.checks_for(snapshot)
            if self.run_document(instance, snapshot, sandbox, checks):
                self.llm_turn(instance, snapshot, sandbox, stream)
                if checks is not None:  # the last turns' checks, then the other samples
                    checks.at_end(instance, sandbox)
                    checks.samples(instance, self.sample)
            if instance.status == "running":
                instance.status = "running" if keep else "exited"
        except DomarkxError as err:
            instance.status = "failed"
            instance.error = str(err)
            raise
        except BaseException as err:
            instance.status = "failed"
            instance.error = f"interrupted: {type(err).__name__}"
            raise
        finally:
            cleanup.untrack(instance.instance_id)
            self.finish(instance, sandbox, keep=keep)
        return instance

    def finish(self, instance: SessionInstance, sandbox: Engine, *, keep: bool = False) -> None:
        """End a run: destroy the sandbox unless kept (a failed run never keeps it), save."""
        if not keep or instance.status == "failed":
            sandbox.stop()
            instance.sandbox["alive"] = False
        instance.finished_at = now()
        self.store.put_instance(instance)
        self.layer_runs.pop(instance.instance_id, None)

    def run_document(
        self,
        instance: SessionInstance,
        snapshot: SessionSnapshot,
        sandbox: Engine,
        checks: CheckRun | None = None,
    ) -> bool:
        """The setup script, then every runnable block in order; False when the run stopped.

        ``checks`` run after each turn that has them, before the next turn's code.
        """
        layers = self.layer_runs.get(instance.instance_id)  # started from a layer: skip to it
        resumed = layers is not None and layers.begin(instance, sandbox, self.store)
        if not resumed and not self.run_setup(instance, snapshot, sandbox):
            return False
        for ref in turn_layers.to_run(layers, instance, sandbox):
            if checks is not None:
                checks.before(instance, sandbox, ref.message)
            if not self.run_block(instance, snapshot, sandbox, ref):
                return False
        if checks is not None:  # every turn followed by a user message is over now
            checks.before(instance, sandbox, len(instance.conversation))
        return True

    def run_setup(
        self, instance: SessionInstance, snapshot: SessionSnapshot, sandbox: Engine
    ) -> bool:
        setup = snapshot.setup_script
        if setup is None:
            return True
        config = snapshot.config()
        language = canonical_language(setup.language) or setup.language
        if language == "python" and builtin_tools.uses_older_imports(setup.code):
            # The older format's `from domarkx.tools... import ...` resolve to the built-ins.
            sandbox.run("python", builtin_tools.install_code(), config.timeout)
        result = sandbox.run(language, setup.code, config.timeout)
        instance.setup_output = outputs_of(result)
        self.store.append_setup_output(instance.instance_id, instance.setup_output)
        self._echo(f"setup-script: exit {result.exit_code}")
        if not result.ok:
            instance.status = "failed"
            instance.error = "the setup script failed" + (
                " (timed out)" if result.timed_out else f" with exit status {result.exit_code}"
            )
            # What it said last (stderr, else stdout): the error is readable where it is shown.
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            if said:
                instance.error += ":\n" + "\n".join(
                    f"  {line}" for line in said[-SETUP_ERROR_LINES:]
                )
            return False
        return True

    def run_block(
        self, instance: SessionInstance, snapshot: SessionSnapshot, sandbox: Engine, ref: BlockRef
    ) -> bool:
        """Run one block (not one whose "not run" holds; a model's with the user's grant),
        record its output; False when the run must stop here."""
        config = snapshot.config()
        message = instance.conversation[ref.message]
        block = message.content[ref.index]
        assert isinstance(block, CodeBlock)
        if refused_before(message, ref.index) is not None:
            self._echo(f"{describe_block(instance.conversation, ref)}: not run (refused)")
            return True
        language = canonical_language(block.language) or block.language
        if model_written(message) and not granted(
            self.approval, instance, sandbox, ref, snapshot.metadata.source_file, self.store.root
        ):
            self.refused.add(snapshot.snapshot_id)  # not cached: a later grant runs it
            result = not_run(self.approval.mode)
        else:
            result = sandbox.run(language, block.code, config.timeout)
        outputs = outputs_of(result, code=block.code)
        instance.conversation[ref.message] = attach_outputs(message, ref.index, outputs)
        # One journal line, not the whole instance: a long run stays linear.
        self.store.append_outputs(instance.instance_id, ref.message, ref.index, outputs)
        if self.echo is not None:
            status = "timed out" if result.timed_out else f"exit {result.exit_code}"
            said = result.stdout if result.refused else status
            self._echo(f"{describe_block(instance.conversation, ref)}: {said}")
        if result.ok or result.refused or config.on_error == "continue":
            return True
        instance.status = "failed"
        instance.error = f"{describe_block(instance.conversation, ref)} " + (
            f"timed out after {config.timeout:g} s"
            if result.timed_out
            else f"failed with exit status {result.exit_code}"
        )
        return False

    def llm_turn(
        self,
        instance: SessionInstance,
        snapshot: SessionSnapshot,
        sandbox: Engine,
        stream: Callable[[str], None] | None = None,
    ) -> None:
        """Ask the model while the session wants a reply (spec: ``run``), tools included.

        A session that ends with tool calls left without results runs them first.
        """
        if snapshot.config().model is None or not needs_model(instance.conversation):
            return
        # The model stack (loop, tools, endpoints, replay: ~28 ms) loads only for a model.
        from domarkx.session.model_turn import ModelTurn

        turn = ModelTurn(
            self.store,
            snapshot,
            sandbox,
            self.approval,
            on_refusal=lambda: self.refused.add(snapshot.snapshot_id),
            replay_mode=self.replay_mode,
            sample=self.sample,
            host_tools=self.host_tools,
        )
        before = len(instance.conversation)
        turn.run(instance, stream)
        if (layers := self.layer_runs.get(instance.instance_id)) is not None:
            layers.after_model(instance, sandbox, before)

    def checks_for(self, snapshot: SessionSnapshot) -> CheckRun | None:
        """The run's checks (``expect`` blocks of user messages); None when it has none."""
        if not has_checks(snapshot):
            return None
        # reason: the checks stack (judge, endpoints, replay) loads only for sessions with checks
        from domarkx.session.check_run import CheckRun

        return CheckRun.for_run(self, snapshot)

    # Errors that name their place ----------------------------------------------------
    def point_at_config(self, err: DomarkxError, snapshot: SessionSnapshot, key: str) -> None:
        """An error caused by a session-config value: name its line in the document."""
        if err.file is None:
            err.file = snapshot.metadata.source_file
            err.line = config_line(self.store.root, err.file, key)

    def raise_for_failures(self, instance: SessionInstance) -> None:
        """``--strict``: a failed or timed-out block is an error (exit status 1).

        The error names the block's ``file:line`` in its source document when
        the block is there (``session.locate``).
        """
        found = failed_block(instance.conversation)
        source = file = line = None
        with contextlib.suppress(DomarkxError):
            source = self.store.get_snapshot(instance.snapshot_id).metadata.source_file
        if source and found is not None:
            line = block_line(Path(self.store.root) / source, found[1])
            file = source
        short = instance.instance_id[:12]
        if instance.status == "failed":
            raise DomarkxError(
                f"instance {short} failed: {instance.error}",
                file=file if line else None,
                line=line,
                hint=f"`domarkx export {short}` shows every output",
            )
        if found is not None:
            m, _, output = found
            exit_code = output.exit_code
            raise DomarkxError(
                f"instance {short}: a code block in message {m + 1} "
                f"({instance.conversation[m].role}) failed with exit status {exit_code}",
                file=file if line else None,
                line=line,
                hint=f"`domarkx export {short}` shows its output",
            )
        for m, message in enumerate(instance.conversation):
            for block in message.content:
                if not isinstance(block, OutputBlock) or block.stream != "stdout":
                    continue
                if block.timed_out or block.exit_code not in (0, None):
                    raise DomarkxError(
                        f"instance {short}: a code block in message "
                        f"{m + 1} ({message.role}) failed with exit status {block.exit_code}",
                        hint=f"`domarkx export {short}` shows its output",
                    )

    def _echo(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    # Stopping, removing, pruning (``session.cleanup``) --------------------------------
    def stop(self, ref: str) -> SessionInstance:
        return cleanup.stop(self.store, ref)

    def remove(self, ref: str) -> str:
        return cleanup.remove(self.store, ref)

    def orphaned(self, instance: SessionInstance) -> bool:
        return cleanup.orphaned(instance)

    def reap(self) -> list[str]:
        return cleanup.reap(self.store)

    def prune(self) -> list[str]:
        return cleanup.prune(self.store)
