"""``InstanceManager``: run a snapshot in a sandbox, as ``docker run`` runs an image.

An instance is created from a snapshot, gets its own sandbox from the
configured engine, runs the setup script and then the runnable code blocks in
order (spec section 1.4), and asks the model for a turn when the session ends
with a user message. Each block's outputs are appended to the instance's
journal as soon as it ends (``Store.append_outputs``), so a crash loses
nothing that ran, and the instance file is written whole at the start and
the end.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from domarkx.data.models import (
    CodeBlock,
    Message,
    OutputBlock,
    SessionInstance,
    SessionSnapshot,
)
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, EngineError, LLMError, PluginError
from domarkx.execution.engine import (
    INSTANCE_LABEL,
    PROJECT_LABEL,
    BlockResult,
    Engine,
    canonical_language,
    engine_class,
)
from domarkx.session import owners
from domarkx.session.approval import NOT_RUN, Approval, ApprovalRequired, CodeRequest

if TYPE_CHECKING:
    from domarkx.llm.endpoints import Access


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class BlockRef:
    """Where a runnable block sits: message index and content index."""

    message: int
    index: int


def runnable(role: str, block: CodeBlock, engine: type[Engine] | Engine) -> bool:
    """Spec 1.4: assistant blocks run unless ``norun``; others only with ``run``."""
    if "norun" in block.flags:
        return False
    if role != "assistant" and "run" not in block.flags:
        return False
    if "run" in block.flags:
        return True
    return engine.supports(block.language) if block.language else False


def runnable_blocks(
    conversation: list[Message], engine: type[Engine] | Engine
) -> Iterator[BlockRef]:
    """Runnable blocks in order, read lazily: running a block inserts output blocks."""
    m = 0
    while m < len(conversation):
        message = conversation[m]
        i = 0
        while i < len(conversation[m].content):
            block = conversation[m].content[i]
            if isinstance(block, CodeBlock) and runnable(message.role, block, engine):
                yield BlockRef(m, i)
            i += 1
        m += 1


def _as_fence_text(text: str) -> str:
    """Output as a fenced block can hold it: lines end in ``\n`` (a document reads a
    ``\r`` as a line end), and the final newline belongs to the fence.

    Stored this way, importing an export (or a chat's appended turn) gives back
    exactly the instance's outputs.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:-1] if text.endswith("\n") else text


def outputs_of(result: BlockResult, language: str = "text") -> list[OutputBlock]:
    """The output blocks recorded for one block: stdout always, stderr when not empty."""
    blocks = [
        OutputBlock(
            stream="stdout",
            text=_as_fence_text(result.stdout),
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration=round(result.duration, 6),
            language=language,
        )
    ]
    if result.stderr:
        blocks.append(
            OutputBlock(stream="stderr", text=_as_fence_text(result.stderr), language=language)
        )
    return blocks


def attach_outputs(message: Message, index: int, outputs: list[OutputBlock]) -> Message:
    """``message`` with the outputs after block ``index`` replaced by ``outputs``."""
    return message.with_outputs(index, outputs)


def describe_block(conversation: list[Message], ref: BlockRef) -> str:
    block = conversation[ref.message].content[ref.index]
    role = conversation[ref.message].role
    name = f" `{block.name}`" if isinstance(block, CodeBlock) and block.name else ""
    number = sum(
        isinstance(b, CodeBlock) for b in conversation[ref.message].content[: ref.index + 1]
    )
    return f"message {ref.message + 1} ({role}), code block {number}{name}"


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

    @property
    def approval(self) -> Approval:
        if self._approval is None:
            from domarkx.session.approval import for_project

            self._approval = for_project(self.store.root)
        return self._approval

    @approval.setter
    def approval(self, value: Approval) -> None:
        self._approval = value

    # Creating and running ---------------------------------------------------
    def create(
        self, snapshot: SessionSnapshot, engine: str | None = None, instance_id: str | None = None
    ) -> SessionInstance:
        _refuse_when_exiting()
        config = snapshot.config()
        engine_name = engine or config.engine
        try:
            cls = engine_class(engine_name)
        except EngineError as err:  # unknown (a plugin that is broken is not the document's)
            if engine is None:  # the document's `engine:`, not --engine
                self.point_at_config(err, snapshot, "engine")
            raise
        self._check_languages(snapshot, cls)
        self._check_model_source(snapshot)
        self._check_grants(snapshot, cls)
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

    def _check_languages(self, snapshot: SessionSnapshot, cls: type[Engine]) -> None:
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

    def _check_model_source(self, snapshot: SessionSnapshot) -> None:
        """An older-format session whose model is a setup-script ``client`` cannot be asked."""
        if snapshot.config().model is not None:
            return
        from domarkx.llm.loop import needs_model

        if not needs_model(snapshot.conversation):
            return
        from domarkx.session.legacy import check_model_source, read_source

        setup = snapshot.setup_script
        source_file = snapshot.metadata.source_file
        check_model_source(
            setup.language if setup else None,
            setup.code if setup else None,
            read_source(self.store.root, source_file) if setup else None,
            source_file,
        )

    def _check_grants(self, snapshot: SessionSnapshot, cls: type[Engine]) -> None:
        """What the session asks of its sandbox and the user has not granted: an error."""
        from domarkx import config as project_config

        refused = cls.refusal(snapshot.config(), project_config.load(self.store.root))
        if refused is not None:
            source = snapshot.metadata.source_file
            raise EngineError(
                refused.message,
                file=source,
                line=self._config_line(source, refused.key),
                hint=refused.hint,
            )

    def start(
        self, instance: SessionInstance, snapshot: SessionSnapshot, *, keep: bool = False
    ) -> Engine:
        """Start the sandbox, labelled with the instance and this project.

        ``keep`` is recorded: a kept sandbox outlives its run on purpose, any
        other one whose owner died is a leftover that ``prune`` removes.
        """
        from domarkx import config as project_config

        config = snapshot.config()
        cls = engine_class(instance.engine)
        workdir = self.store.instance_dir(instance.instance_id) / "work"
        labels = {INSTANCE_LABEL: instance.instance_id, PROJECT_LABEL: self.store.project_id}
        engine = cls(config, workdir, labels=labels)
        engine.project = project_config.load(self.store.root)
        try:
            handle = engine.start()
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
        if strict:
            self.raise_for_failures(instance)
        return instance

    def execute(
        self,
        instance: SessionInstance,
        snapshot: SessionSnapshot,
        *,
        keep: bool = False,
        stream: Callable[[str], None] | None = None,
    ) -> SessionInstance:
        """Run an instance to its end; the sandbox is destroyed unless ``keep``."""
        _refuse_when_exiting()
        sandbox = self.start(instance, snapshot, keep=keep)
        _live[instance.instance_id] = (self, instance, sandbox)
        try:
            if self.run_document(instance, snapshot, sandbox):
                self.llm_turn(instance, snapshot, sandbox, stream)
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
            _live.pop(instance.instance_id, None)
            self.finish(instance, sandbox, keep=keep)
        return instance

    def finish(self, instance: SessionInstance, sandbox: Engine, *, keep: bool = False) -> None:
        """End a run: destroy the sandbox unless kept (a failed run never keeps it), save."""
        if not keep or instance.status == "failed":
            sandbox.stop()
            instance.sandbox["alive"] = False
        instance.finished_at = now()
        self.store.put_instance(instance)

    def run_document(
        self, instance: SessionInstance, snapshot: SessionSnapshot, sandbox: Engine
    ) -> bool:
        """The setup script, then every runnable block in order; False when the run stopped."""
        if not self.run_setup(instance, snapshot, sandbox):
            return False
        for ref in runnable_blocks(instance.conversation, sandbox):
            if not self.run_block(instance, snapshot, sandbox, ref):
                return False
        return True

    def run_setup(
        self, instance: SessionInstance, snapshot: SessionSnapshot, sandbox: Engine
    ) -> bool:
        setup = snapshot.setup_script
        if setup is None:
            return True
        config = snapshot.config()
        language = canonical_language(setup.language) or setup.language
        result = sandbox.run(language, setup.code, config.timeout)
        instance.setup_output = outputs_of(result)
        self.store.append_setup_output(instance.instance_id, instance.setup_output)
        self._echo(f"setup-script: exit {result.exit_code}")
        if not result.ok:
            instance.status = "failed"
            instance.error = "the setup script failed" + (
                " (timed out)" if result.timed_out else f" with exit status {result.exit_code}"
            )
            return False
        return True

    def run_block(
        self, instance: SessionInstance, snapshot: SessionSnapshot, sandbox: Engine, ref: BlockRef
    ) -> bool:
        """Run one block, record its output; False when the run must stop here."""
        config = snapshot.config()
        message = instance.conversation[ref.message]
        block = message.content[ref.index]
        assert isinstance(block, CodeBlock)
        language = canonical_language(block.language) or block.language
        result = sandbox.run(language, block.code, config.timeout)
        outputs = outputs_of(result)
        instance.conversation[ref.message] = attach_outputs(message, ref.index, outputs)
        # One journal line, not the whole instance: a long run stays linear.
        self.store.append_outputs(instance.instance_id, ref.message, ref.index, outputs)
        if self.echo is not None:
            self._echo(
                f"{describe_block(instance.conversation, ref)}: "
                + ("timed out" if result.timed_out else f"exit {result.exit_code}")
            )
        if result.ok or config.on_error == "continue":
            return True
        instance.status = "failed"
        instance.error = f"{describe_block(instance.conversation, ref)} " + (
            f"timed out after {config.timeout:g} s"
            if result.timed_out
            else f"failed with exit status {result.exit_code}"
        )
        return False

    def run_model_code(
        self,
        snapshot: SessionSnapshot,
        sandbox: Engine,
        language: str,
        code: str,
        where: str,
    ) -> list[OutputBlock]:
        """Run code that a model wrote (a code-loop block, a bash/python tool call).

        The one path for "a model wants something run": the user's grant decides
        (``self.approval``); a refusal is recorded as ``NOT_RUN`` and the model is told.
        """
        request = CodeRequest(
            session=snapshot.metadata.source_file,
            where=where,
            engine=sandbox.name,
            language=language,
            code=code,
        )
        if not self.approval.decide(request, isolated=sandbox.isolated):
            self.refused.add(snapshot.snapshot_id)
            return [OutputBlock(stream="stdout", text=NOT_RUN, exit_code=None)]
        return outputs_of(sandbox.run(language, code, snapshot.config().timeout))

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
        config = snapshot.config()
        if config.model is None:
            return
        from domarkx.llm.loop import llm_turns, needs_model
        from domarkx.llm.replay import ReplayCache

        if not needs_model(instance.conversation):
            return

        def execute(block: CodeBlock) -> list[OutputBlock] | None:
            if not runnable("assistant", block, sandbox):
                return None
            language = canonical_language(block.language) or block.language
            where = f"message {len(instance.conversation)} (assistant)"
            return self.run_model_code(snapshot, sandbox, language, block.code, where)

        access = self.model_access(snapshot)
        try:
            tools = self.tools_for(snapshot, sandbox)
            keys = llm_turns(
                instance.conversation,
                access.settings,
                front_matter=snapshot.metadata.user_metadata,
                execute=execute,
                on_change=_TailSaver(self.store, instance).save,
                cache=ReplayCache(self.store.replay_dir, mode=self.replay_mode),
                context=snapshot.metadata.source_file,
                stream=stream,
                tools=tools,
                refusal=access.refusal,
            )
        except DomarkxError as err:
            # Keep the records of the calls that worked before this one failed.
            instance.llm_records.extend(getattr(err, "llm_records", None) or [])
            if isinstance(err, LLMError) and err.file is None:
                # A server that cannot be reached or refuses: point at the session's model.
                source = snapshot.metadata.source_file
                err.file, err.line = source, self._config_line(source, "model")
            if isinstance(err, ApprovalRequired):
                short = instance.instance_id[:12]
                err.hint = (
                    f"{err.hint}; the reply is kept in instance {short} (`domarkx export {short}`)"
                )
            raise
        instance.llm_records.extend(keys)
        self.store.put_instance(instance)

    def tools_for(self, snapshot: SessionSnapshot, sandbox: Engine) -> Any:
        """The run's ``ToolBox``: session-config's ``tools``, or the setup script's ``tools``."""
        from domarkx.llm.tools import ToolBox, ToolDeclarationError

        config = snapshot.config()
        setup = snapshot.setup_script
        is_python = setup is not None and canonical_language(setup.language) == "python"

        def run_code(language: str, code: str, where: str) -> list[OutputBlock]:
            return self.run_model_code(snapshot, sandbox, language, code, where)

        try:
            return ToolBox.declare(
                config.tools,
                setup_code=setup.code if setup is not None and is_python else None,
                run_code=run_code,
                python=lambda code: sandbox.run("python", code, config.timeout),
            )
        except ToolDeclarationError as err:
            from domarkx.session.legacy import config_key_line, read_source

            source = read_source(self.store.root, snapshot.metadata.source_file)
            raise ToolDeclarationError(
                err.message,
                file=snapshot.metadata.source_file,
                line=config_key_line(source, "tools") if source is not None else None,
                hint=err.hint,
            ) from None

    def model_access(self, snapshot: SessionSnapshot) -> Access:
        """The session's model settings as the project's configuration lets them out."""
        from domarkx import config as project_config
        from domarkx.llm.endpoints import resolve

        settings = snapshot.config().model
        assert settings is not None
        source = snapshot.metadata.source_file
        return resolve(
            settings,
            project_config.load(self.store.root),
            session=source,
            locate=lambda key: self._config_line(source, key),
        )

    def point_at_config(self, err: DomarkxError, snapshot: SessionSnapshot, key: str) -> None:
        """An error caused by a session-config value: name its line in the document."""
        if err.file is None:
            err.file = snapshot.metadata.source_file
            err.line = self._config_line(err.file, key)

    def _config_line(self, source_file: str, key: str) -> int | None:
        """The line of ``key`` in the session's session-config, read again from its source."""
        from domarkx.session.legacy import config_key_line, read_source

        text = read_source(self.store.root, source_file)
        return config_key_line(text, key) if text is not None else None

    def raise_for_failures(self, instance: SessionInstance) -> None:
        """``--strict``: a failed or timed-out block is an error (exit status 1).

        The error names the block's ``file:line`` in its source document when
        the block is there (``session.locate``).
        """
        from pathlib import Path

        from domarkx.session.locate import block_line, failed_block

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
                        f"instance {instance.instance_id[:12]}: a code block in message "
                        f"{m + 1} ({message.role}) failed with exit status {block.exit_code}",
                        hint=f"`domarkx export {instance.instance_id[:12]}` shows its output",
                    )

    def _echo(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    # Stopping, removing, pruning --------------------------------------------
    def stop(self, ref: str) -> SessionInstance:
        instance = self.store.get_instance(self.store.resolve_instance(ref))
        self._destroy_sandbox(instance)
        if instance.status in ("running", "created"):
            instance.status = "stopped"
            instance.finished_at = instance.finished_at or now()
        self.store.put_instance(instance)
        return instance

    def _destroy_sandbox(self, instance: SessionInstance) -> None:
        if not instance.sandbox.get("alive"):
            return
        owner = instance.sandbox.get("owner_pid")
        if owner and owner != os.getpid() and _pid_alive(owner):
            # An interactive run still owns the sandbox: ask it to end.
            import signal

            with contextlib.suppress(OSError):
                os.kill(owner, signal.SIGTERM)
        try:
            engine_class(instance.engine).destroy(instance.sandbox)
        except EngineError as err:
            print(f"domarkx: warning: {err}", file=sys.stderr)
        instance.sandbox["alive"] = False

    def remove(self, ref: str) -> str:
        instance_id = self.store.resolve_instance(ref)
        try:
            instance = self.store.get_instance(instance_id)
        except DomarkxError:
            instance = None
        if instance is not None:
            self._destroy_sandbox(instance)
        self.store.remove_instance(instance_id)
        return instance_id

    def orphaned(self, instance: SessionInstance) -> bool:
        """Whether ``instance`` was left by a run that died (SIGKILL) without ending it.

        Its owner process is gone while it is still ``created`` or ``running``,
        and it was not kept on purpose (``domarkx run --keep`` leaves a running
        sandbox whose owner has exited).
        """
        if instance.status not in ("created", "running"):
            return False
        sandbox = instance.sandbox
        if instance.status == "running" and not sandbox.get("alive", True):
            return True
        owner = sandbox.get("owner_pid")
        if not owner or _pid_alive(int(owner)):
            return False
        return not sandbox.get("keep", False) or instance.engine == "local_shell"

    def reap(self) -> list[str]:
        """End what killed runs of this project left: their sandboxes and instances.

        Each orphaned instance gets its sandbox destroyed and is marked
        ``failed``; then every sandbox of this project that no live instance
        owns is removed. Another project's sandboxes are never touched.
        """
        reaped: list[str] = []
        gone = owners.dead(self.store.home)
        for instance_id in self.store.instance_ids():
            try:
                instance = self.store.get_instance(instance_id)
            except DomarkxError:
                continue
            if self.orphaned(instance):
                self._destroy_sandbox(instance)
                instance.status = "failed"
                instance.error = instance.error or "interrupted: its process was killed"
                instance.finished_at = instance.finished_at or now()
                self.store.put_instance(instance)
                reaped.append(instance_id)
        reaped += self._prune_sandboxes()
        owners.forget(self.store.home, gone)
        return reaped

    def _prune_sandboxes(self) -> list[str]:
        """Remove this project's sandboxes that no live instance owns."""
        from domarkx import registry
        from domarkx.execution.engine import GROUP

        live = _LiveInstances(self)
        removed: list[str] = []
        for name in registry.names(GROUP):
            try:
                cls = engine_class(name)
            except PluginError as err:
                # One broken engine plugin must not stop the cleanup of the others.
                print(f"domarkx: warning: {err.message}; skipped", file=sys.stderr)
                continue
            try:
                removed += cls.prune(keep=live, project=self.store.project_id)
            except EngineError:
                continue  # that engine is not reachable here: nothing of it to prune
        return removed

    def prune(self) -> list[str]:
        """Remove finished instances, unused snapshots and this project's stray sandboxes.

        Holds the build lock meanwhile: a build in progress uses snapshots that
        nothing refers to yet, and its sandboxes.
        """
        from domarkx.data import lock

        with lock.BuildLock(str(self.store.lock_file), doing="prune"):
            return self._prune()

    def _prune(self) -> list[str]:
        gone = owners.dead(self.store.home)
        removed: list[str] = []
        live: set[str] = set()
        referenced = set(self.store.tags().values()) | self.store.build_snapshot_ids()
        for instance_id in self.store.instance_ids():
            try:
                instance = self.store.get_instance(instance_id)
            except DomarkxError:
                self.store.remove_instance(instance_id)
                removed.append(instance_id)
                continue
            if instance.status in ("exited", "failed", "stopped") or self.orphaned(instance):
                self._destroy_sandbox(instance)
                self.store.remove_instance(instance_id)
                removed.append(instance_id)
            else:
                live.add(instance_id)
                referenced.add(instance.snapshot_id)
        for snapshot_id in self.store.snapshot_ids():
            if snapshot_id not in referenced:
                self.store.remove_snapshot(snapshot_id)
                removed.append(snapshot_id)
        removed += self._prune_sandboxes()
        owners.forget(self.store.home, gone)
        return removed


class _LiveInstances:
    """``id in live``: whether that instance of this store still runs, read afresh.

    Read at the moment a sandbox is considered, so that a run which started
    after the listing (its instance is written before its sandbox) is kept.
    """

    def __init__(self, manager: InstanceManager) -> None:
        self.manager = manager

    def __contains__(self, instance_id: object) -> bool:
        if not isinstance(instance_id, str) or "/" in instance_id or instance_id in ("", ".", ".."):
            return False
        try:
            instance = self.manager.store.get_instance(instance_id)
        except DomarkxError:
            return False
        if instance.status not in ("created", "running"):
            return False
        return not self.manager.orphaned(instance)


class _TailSaver:
    """Journals the end of the conversation after each change of the model's loop.

    The loop only appends messages or changes its last one, so the messages
    from the last one saved onwards are all that can differ.
    """

    def __init__(self, store: Store, instance: SessionInstance) -> None:
        self.store = store
        self.instance = instance
        self.saved = len(instance.conversation)

    def save(self) -> None:
        conversation = self.instance.conversation
        start = max(0, min(self.saved, len(conversation)) - 1)
        self.store.append_messages(self.instance.instance_id, start, conversation[start:])
        self.saved = len(conversation)


# Runs under way in this process. A build runs sessions in doit's worker threads
# (see domarkx/overlap.py); when it is interrupted, the main thread ends and
# those threads stop wherever they are, without reaching ``execute``'s end. At
# exit they end here as an interrupted run in the main thread would: the
# sandbox destroyed, the instance ``failed``.
_live: dict[str, tuple[InstanceManager, SessionInstance, Engine]] = {}


_exiting = False


def _refuse_when_exiting() -> None:
    """No run starts once the process has begun to exit (a thread that was waiting)."""
    if _exiting:
        raise DomarkxError("the process is ending: the run did not start")


def _end_live_runs() -> None:
    global _exiting
    _exiting = True
    for manager, instance, sandbox in list(_live.values()):
        _live.pop(instance.instance_id, None)
        instance.status = "failed"
        instance.error = instance.error or "interrupted: the process ended during the run"
        with contextlib.suppress(Exception):
            manager.finish(instance, sandbox)


atexit.register(_end_live_runs)


def _pid_alive(pid: int) -> bool:
    return owners.alive(pid)
