"""The model turn of a run: ask the model, run what it wrote, with the user's grant.

The one path for "a model wants something run" (code-loop blocks and
``bash``/``python`` tool calls): the user's grant decides (``Approval``); a
refusal is recorded as a refused block (``blocks.not_run``) and the model is
told. The session's model settings reach a server only as the project's
configuration lets them out (``domarkx.llm.endpoints``).
"""

from __future__ import annotations

from collections.abc import Callable

from domarkx import config as project_config
from domarkx.data.models import CodeBlock, OutputBlock, SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, LLMError
from domarkx.execution.engine import Engine, canonical_language
from domarkx.llm.builtin_tools import HostTool
from domarkx.llm.endpoints import Access, resolve
from domarkx.llm.loop import llm_turns
from domarkx.llm.replay import ReplayCache
from domarkx.llm.tools import ToolBox, ToolDeclarationError
from domarkx.session.approval import Approval, ApprovalRequired, CodeRequest
from domarkx.session.blocks import not_run, outputs_of, runnable
from domarkx.session.locate import config_line


class ModelTurn:
    """The model's part of one run of ``snapshot`` in ``sandbox``."""

    def __init__(
        self,
        store: Store,
        snapshot: SessionSnapshot,
        sandbox: Engine,
        approval: Approval,
        *,
        on_refusal: Callable[[], None],
        replay_mode: str | None = None,
        sample: int = 0,
        host_tools: dict[str, HostTool] | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.sandbox = sandbox
        self.approval = approval
        self.on_refusal = on_refusal  # the user refused some code: the run is not cached
        self.replay_mode = replay_mode
        self.sample = sample  # a check's sample N > 0 has replay records of its own
        self.source = snapshot.metadata.source_file
        self.host_tools = host_tools  # the session tools on offer (run on the host)

    def config_line(self, key: str) -> int | None:
        return config_line(self.store.root, self.source, key)

    def run_code(self, language: str, code: str, where: str) -> list[OutputBlock]:
        """Run code that a model wrote, if the user grants it; the outputs to record."""
        request = CodeRequest(
            session=self.source,
            where=where,
            engine=self.sandbox.name,
            language=language,
            code=code,
        )
        if not self.approval.decide(request, isolated=self.sandbox.isolated):
            self.on_refusal()
            return outputs_of(not_run(self.approval.mode), code=code)
        return outputs_of(self.sandbox.run(language, code, self.snapshot.config().timeout))

    def approve_call(self, language: str, shown: str, where: str) -> str | None:
        """The grant for a built-in file tool's call (``shown`` as the user sees it): None
        to run it, else why not (the user's "no", or ``approve = "never"``)."""
        request = CodeRequest(
            session=self.source,
            where=where,
            engine=self.sandbox.name,
            language=language,
            code=shown,
        )
        if self.approval.decide(request, isolated=self.sandbox.isolated):
            return None
        self.on_refusal()
        return not_run(self.approval.mode).stdout

    def tools(self) -> ToolBox:
        """The run's tools: session-config's ``tools``, or the setup script's ``tools``."""
        config = self.snapshot.config()
        setup = self.snapshot.setup_script
        is_python = setup is not None and canonical_language(setup.language) == "python"
        sandbox = self.sandbox
        try:
            return ToolBox.declare(
                config.tools,
                setup_code=setup.code if setup is not None and is_python else None,
                run_code=self.run_code,
                python=lambda code: sandbox.run("python", code, config.timeout),
                host=self.host_tools,
                approve=self.approve_call,
            )
        except ToolDeclarationError as err:
            raise ToolDeclarationError(
                err.message, file=self.source, line=self.config_line("tools"), hint=err.hint
            ) from None

    def access(self) -> Access:
        """The session's model settings as the project's configuration lets them out."""
        settings = self.snapshot.config().model
        assert settings is not None
        return resolve(
            settings,
            project_config.load(self.store.root),
            session=self.source,
            locate=self.config_line,
        )

    def run(self, instance: SessionInstance, stream: Callable[[str], None] | None = None) -> None:
        """Ask the model while the session wants a reply, tools included.

        A session that ends with tool calls left without results runs them first.
        """
        sandbox = self.sandbox

        def execute(block: CodeBlock) -> list[OutputBlock] | None:
            if not runnable("assistant", block, sandbox):
                return None
            language = canonical_language(block.language) or block.language
            where = f"message {len(instance.conversation)} (assistant)"
            return self.run_code(language, block.code, where)

        access = self.access()
        saver = TailSaver(self.store, instance)
        try:
            keys = llm_turns(
                instance.conversation,
                access.settings,
                front_matter=self.snapshot.metadata.user_metadata,
                execute=execute,
                on_change=saver.save,
                on_outputs=saver.outputs,
                cache=ReplayCache(self.store.replay_dir, mode=self.replay_mode, sample=self.sample),
                context=self.source,
                stream=stream,
                tools=self.tools(),
                refusal=access.refusal,
            )
        except DomarkxError as err:
            # Keep the records of the calls that worked before this one failed.
            instance.llm_records.extend(getattr(err, "llm_records", None) or [])
            if isinstance(err, LLMError) and err.file is None:
                # A server that cannot be reached or refuses: point at the session's model.
                err.file, err.line = self.source, self.config_line("model")
            if isinstance(err, ApprovalRequired):
                short = instance.instance_id[:12]
                err.hint = (
                    f"{err.hint}; the reply is kept in instance {short} (`domarkx export {short}`)"
                )
            raise
        instance.llm_records.extend(keys)
        self.store.put_instance(instance)


class TailSaver:
    """Journals each change of the model's loop once, so that the journal grows linearly.

    The loop appends messages (``save`` journals the ones not saved yet) and adds
    code blocks' outputs to a message it has reported (``outputs`` journals those
    alone); it changes a message in no other way.
    """

    def __init__(self, store: Store, instance: SessionInstance) -> None:
        self.store = store
        self.instance = instance
        self.saved = len(instance.conversation)

    def save(self) -> None:
        conversation = self.instance.conversation
        if self.saved < len(conversation):
            self.store.append_messages(
                self.instance.instance_id, self.saved, conversation[self.saved :]
            )
        self.saved = len(conversation)

    def outputs(self, message: int, index: int, outputs: list[OutputBlock]) -> None:
        if message >= self.saved:
            self.save()  # a message not journaled yet goes whole, its outputs with it
            return
        self.store.append_outputs(self.instance.instance_id, message, index, outputs)
