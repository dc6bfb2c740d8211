"""``domarkx chat``: the source document is the conversation (tools-chat-trust spec, section 2).

A chat imports the document as it stands (through the snapshot path, so
macros and includes expand as in any import), runs it in one sandbox, asks the
model while a user message waits, and appends the new messages to the file.
The append is a text operation on the source: the bytes that were there are
kept, and only the new messages are rendered, by the writer export uses
(``export.render_messages``). Before writing, the new text is imported again
and must give the conversation the model and the sandbox produced; the file
is written atomically, and only if nobody changed it meanwhile.

What is appended: the messages after the document's last one (the model's
replies, ``tool`` results, a ``-m`` question), each with the outputs of the
code it ran. Outputs of the document's own blocks, which run again at the
start of every chat, are not written back: they would go inside messages that
are already there, and a build's export shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx.data.document_file import check_replaceable, replace_document
from domarkx.data.models import CodeBlock, Message, OutputBlock, SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.execution.engine import BlockResult, Engine
from domarkx.llm.builtin_tools import HostTool
from domarkx.llm.messages import parse_reply
from domarkx.llm.replay import ENV, ReplayCache, mode_from_env
from domarkx.llm.reply import needs_model
from domarkx.parsing.blocks import is_open_at_end
from domarkx.parsing.markdown import decode_document, read_document, split_front_matter
from domarkx.session.approval import Approval, ApprovalRequired
from domarkx.session.export import render_messages
from domarkx.session.files import check_document
from domarkx.session.instance import InstanceManager
from domarkx.session.names import display_path, session_name
from domarkx.session.snapshot import SnapshotManager
from domarkx.session.source import append_text, before_message

if TYPE_CHECKING:
    from domarkx.checks.results import Outcome
    from domarkx.checks.turns import TurnChecks


class DocumentChanged(DomarkxError):
    """The document changed on disk since the chat read it; the reply stays in the instance."""


class ChatError(DomarkxError):
    """A chat turn could not be appended; nothing was written to the document."""


def user_message(text: str) -> Message:
    """The ``## user`` message of a typed question, read as a model's reply is.

    Text becomes a blockquote (a ``## heading`` in it stays part of the message)
    and fenced code becomes code blocks.
    """
    return Message(role="user", content=list(parse_reply(text)))


def as_written(message: Message) -> Message:
    """``message`` as the document holds it: an output's duration is kept in instances only."""
    content = [
        b.model_copy(update={"duration": None}) if isinstance(b, OutputBlock) else b
        for b in message.content
    ]
    return message.model_copy(update={"content": content})


class ChatSession:
    """One chat over one document: one instance, one sandbox, any number of turns.

    ``prepare`` reads and imports the document; ``start`` brings the sandbox up
    and runs the setup script and the document's blocks once; each ``answer``
    (after ``prepare`` left a user message waiting, or after ``ask``) asks the
    model and appends the turn to the file; ``close`` ends the sandbox.
    """

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        approval: Approval,
        params: dict[str, str] | None = None,
        regenerate: bool = False,
        stream: Callable[[str], None] | None = None,
        on_message: Callable[[Message], None] | None = None,
        adjust: Callable[[SessionSnapshot], SessionSnapshot] | None = None,
        host_tools: dict[str, HostTool] | None = None,
    ) -> None:
        # For this chat only (`--model`, `--system`): applied to every import of the text.
        self.adjust = adjust
        self.store = store
        self.path = Path(path)
        self.display = display_path(self.path, store.root)
        self.params = dict(params or {})
        self.regenerate = regenerate
        self.snapshots = SnapshotManager(store)
        # --regenerate asks the model again and records the new reply in the old one's place.
        self.manager = InstanceManager(
            store, approval=approval, replay_mode="record" if regenerate else None
        )
        self.manager.host_tools = host_tools  # the session tools (domarkx.session.agents)
        # The reply's text as it arrives, and each new message once it is complete
        # (with the outputs of its code): what a terminal shows of the turn.
        self.stream = stream
        self.on_message = on_message
        self.data = b""  # the file as last read or written: what must still be on disk
        self.base = b""  # the document the next turn appends to (with a new question)
        self.snapshot: SessionSnapshot | None = None
        self.instance: SessionInstance | None = None
        self.sandbox: Engine | None = None
        self.question: list[Message] = []  # the new user message the next turn appends
        # The results of the last answer's checks (its message's expect block), as written.
        self.checked: list[Outcome] = []
        self._shown = 0

    # Reading ------------------------------------------------------------------
    def prepare(self, message: str | None = None) -> None:
        """Read and import the document: cut after the last user message on
        ``--regenerate``, then add ``message`` (``-m``) as a new ``## user`` message."""
        check_document(self.path, self.store.root, self.display)
        check_replaceable(self.path, self.display)  # before the model is asked
        self.data = read_document(self.path, self.display)
        base = self.data
        if self.regenerate:
            if mode_from_env() == "replay":
                raise ChatError(
                    f"--regenerate asks the model again, and {ENV}=replay forbids calling it",
                    hint=f"unset {ENV}, or set it to auto",
                )
            base = self._before_answer(base)
        self._check_open_end(base)
        self.question = []
        if message is not None:
            base = append_text(base, render_messages([user_message(message)]))
        self.base = base
        self.snapshot = self._import(base, store=False)
        if message is not None:
            self.question = [self.snapshot.conversation[-1]]

    def _before_answer(self, data: bytes) -> bytes:
        """The document up to the end of its last user message (``--regenerate``)."""
        parsed = self.snapshots.parse_text(decode_document(data, self.display), self.path)
        users = [i for i, m in enumerate(parsed.messages) if m.role == "user"]
        if not users:
            raise ChatError(
                "--regenerate: the document has no user message to answer again",
                file=self.display,
                hint="add a `## user` message, or use `-m TEXT`",
            )
        return before_message(data, parsed, users[-1] + 1)

    def _check_open_end(self, data: bytes) -> None:
        """An error, before the model is asked, when appended text would join the last block."""
        _, lines, _ = split_front_matter(decode_document(data, self.display), self.display)
        if is_open_at_end("\n".join(lines)):
            raise ChatError(
                "the document ends inside an open block (a code fence or an HTML comment "
                "never closed): what chat appends would become part of it",
                file=self.display,
                hint="close that block at the end of the document, then run the chat again",
            )

    @property
    def pending(self) -> bool:
        """Whether the document (with ``-m``'s question) ends with a message to answer."""
        assert self.snapshot is not None
        return needs_model(self.snapshot.conversation)

    def _import(self, data: bytes, *, store: bool = True) -> SessionSnapshot:
        """The snapshot of the document text ``data`` (stored unless ``store`` is False)."""
        parsed = self.snapshots.parse_text(decode_document(data, self.display), self.path)
        expanded, _ = self.snapshots.expand(parsed, self.params)
        snapshot = self.snapshots.build(expanded)
        if self.adjust is not None:
            snapshot = self.adjust(snapshot).with_id()
        if store:
            self.store.put_snapshot(snapshot)
        return snapshot

    # Running ------------------------------------------------------------------
    def start(self) -> None:
        """Create the instance, bring its sandbox up, run the setup script and the blocks."""
        snapshot = self.snapshot
        assert snapshot is not None
        if snapshot.config().model is None:
            raise ChatError(
                "the session-config names no model, so nobody would answer",
                file=self.display,
                hint="add `model:` to the session-config (docs/llm.md)",
            )
        self.store.put_snapshot(snapshot)
        self.instance = self.manager.create(snapshot)
        self.sandbox = self.manager.start(self.instance, snapshot)
        if not self.manager.run_document(self.instance, snapshot, self.sandbox):
            raise ChatError(
                f"{self.instance.error}; the model was not asked",
                file=self.display,
                hint=f"fix the session, or see every output with "
                f"`domarkx export {self.instance.instance_id[:12]}`",
            )

    def ask(self, text: str) -> list[Message]:
        """Add ``text`` as a ``## user`` message, answer it, append the turn to the file."""
        assert self.instance is not None
        self._check_unchanged()
        self.base = append_text(self.data, render_messages([user_message(text)]))
        self.snapshot = self._import(self.base)
        # The question as an import reads it (macros expanded), so the document agrees.
        self.question = [self.snapshot.conversation[-1]]
        self.instance.conversation.append(self.snapshot.conversation[-1].model_copy(deep=True))
        self.store.put_instance(self.instance)
        return self.answer()

    def answer(self) -> list[Message]:
        """Ask the model for the waiting user message and append the turn to the file.

        Returns the messages appended: the new question (``-m``, ``ask``), if any,
        and what the model and the sandbox added.
        """
        instance, snapshot, sandbox = self.instance, self.snapshot, self.sandbox
        assert instance is not None and snapshot is not None and sandbox is not None
        before = len(instance.conversation)
        self._shown = before
        try:
            self.manager.llm_turn(instance, snapshot, sandbox, self._stream)
        except DomarkxError as err:
            received = len(instance.conversation) > before
            raise self._kept_in_instance(err, received=received) from None
        self._catch_up()
        self.checked = []
        asked = self._check_turn(before)
        added = [as_written(m) for m in instance.conversation[before:]]
        if not added:
            return []
        data = append_text(self.base, render_messages(added))
        written = self._verify(data, [*snapshot.conversation, *added])
        self._check_unchanged()
        # Through a link, the file it points to (inside the project) is the one written,
        # with its mode kept (data/document_file.py).
        replace_document(self.path, data, self.display)
        self.data = self.base = data
        if asked is not None:  # read again from the file, for the checks' lines in it
            # reason: the checks stack loads only for a message with an expect block
            from domarkx.checks.results import outcomes

            expects = self._checks_of(written).expects
            found = outcomes(self.display, {asked: expects[asked]}, written.conversation)
            self.checked = [o for o in found if o.result.kind != "samples"]  # asked once
        self.store.put_snapshot(written)
        self.store.tag(session_name(self.path, self.store.root), written.snapshot_id)
        return [*self.question, *added]

    def close(self, failed: bool = False) -> None:
        """End the sandbox and save the instance (``failed`` after an error)."""
        if self.instance is None or self.sandbox is None:
            return
        if failed:
            self.instance.status = "failed"
        elif self.instance.status == "running":
            self.instance.status = "exited"
        self.manager.finish(self.instance, self.sandbox)

    # The expect block of the message answered -------------------------------------
    def _check_turn(self, before: int) -> int | None:
        """Run the checks of the user message the turn answered, in its sandbox, and record
        them in the reply's ``msg-metadata`` as a run does; that message's index (None: it
        has no expect block). With ``samples``, a chat asks once: the checks run once."""
        instance, snapshot, sandbox = self.instance, self.snapshot, self.sandbox
        assert instance is not None and snapshot is not None and sandbox is not None
        users = [i for i, m in enumerate(instance.conversation[:before]) if m.role == "user"]
        if not users or not any(
            isinstance(b, CodeBlock) and "expect" in b.flags
            for b in instance.conversation[users[-1]].content
        ):
            return None
        checks = self._checks_of(snapshot)
        timeout = snapshot.config().timeout
        layers = self.manager.layer_runs.get(instance.instance_id)

        def in_sandbox(language: str, code: str) -> BlockResult:
            if layers is not None:
                # What a check does stays in this sandbox and no layer key says so: the
                # turns after it in this chat save no layer (a later chat resumes earlier).
                layers.broken = True
            return sandbox.run(language, code, timeout)

        checks.after(instance.conversation, users[-1], in_sandbox)
        keys = getattr(checks.grader, "keys", None) or []  # the judge's replay records
        instance.llm_records.extend(k for k in keys if k not in instance.llm_records)
        self.store.put_instance(instance)
        return users[-1]

    def _checks_of(self, snapshot: SessionSnapshot) -> TurnChecks:
        # reason: the checks stack (~100 ms) loads only for a message with an expect block
        from domarkx import config as project_config
        from domarkx.checks.turns import TurnChecks  # reason: (as above)

        return TurnChecks.for_snapshot(
            snapshot,
            root=Path(self.store.root),
            project=project_config.load(self.store.root),
            cache=ReplayCache(self.store.replay_dir, mode=self.manager.replay_mode),
        )

    # Checks -------------------------------------------------------------------
    def _verify(self, data: bytes, expected: list[Message]) -> SessionSnapshot:
        """The snapshot ``data`` imports to; an error unless it holds ``expected``."""
        assert self.snapshot is not None
        written = self._import(data, store=False)
        if written.conversation == expected and _same_document(written, self.snapshot):
            return written
        where = next(
            (
                i
                for i, (a, b) in enumerate(zip(written.conversation, expected, strict=False))
                if a != b
            ),
            min(len(written.conversation), len(expected)),
        )
        role = expected[where].role if where < len(expected) else "?"
        raise self._kept_in_instance(
            ChatError(
                f"the appended text would not read back as the conversation: message "
                f"{where + 1} ({role}) would differ",
                file=self.display,
                hint="please report this document and reply: the writer should keep them apart",
            )
        )

    def _check_unchanged(self) -> None:
        try:
            now = self.path.read_bytes()
        except OSError:
            now = None
        if now != self.data:
            assert self.instance is not None
            ident = self.instance.instance_id[:12]
            self.store.keep_instance(self.instance.instance_id)  # prune leaves it
            raise DocumentChanged(
                f"the document changed on disk since the chat read it; nothing was written "
                f"to it (instance {ident} holds the conversation with the reply)",
                file=self.display,
                hint=f"`domarkx export {ident}` shows it; run the chat again to answer the "
                "document as it is now",
            )

    def _kept_in_instance(self, err: DomarkxError, *, received: bool = True) -> DomarkxError:
        """``err`` (same kind, same exit status), saying the file is untouched and where
        the turn is kept (when any of it came: else there is nothing to show)."""
        assert self.instance is not None
        ident = self.instance.instance_id[:12]
        if received or self.question or isinstance(err, ApprovalRequired):
            self.store.keep_instance(self.instance.instance_id)  # prune leaves it
        if isinstance(err, ApprovalRequired):
            # The run already names the instance that keeps the reply; the message ends
            # with the code, so what chat adds goes to the hint.
            err.hint = (
                f"nothing was written to {self.display}; the same command with --yes "
                f"answers from the replay record; {err.hint}"
            )
            return err
        if not received and not self.question:
            err.message += f" (nothing was written to {self.display})"
            return err
        if not received:  # the typed question is all there is to keep
            err.message += (
                f" (nothing was written to {self.display}; instance {ident} keeps your question)"
            )
            err.hint = f"{err.hint}; " if err.hint else ""
            err.hint += f"`domarkx export {ident}` shows it"
            return err
        err.message += f" (nothing was written to {self.display}; instance {ident} holds the turn)"
        err.hint = f"{err.hint}; " if err.hint else ""
        err.hint += f"`domarkx export {ident}` shows it"
        return err

    # Showing the turn as it comes ---------------------------------------------
    def _stream(self, chunk: str) -> None:
        self._catch_up()
        if self.stream is not None:
            self.stream(chunk)

    def _catch_up(self) -> None:
        """Pass on the messages completed since the last call (a reply, its outputs)."""
        assert self.instance is not None
        conversation = self.instance.conversation
        while self._shown < len(conversation):
            if self.on_message is not None:
                self.on_message(conversation[self._shown])
            self._shown += 1


def _same_document(a: SessionSnapshot, b: SessionSnapshot) -> bool:
    """The same front matter, config, setup script and preamble (what precedes the messages)."""
    return (
        a.metadata.user_metadata == b.metadata.user_metadata
        and a.execution_config == b.execution_config
        and a.setup_script == b.setup_script
        and a.preamble == b.preamble
    )
