"""What a code lens does: the CLI's command, with the editor as its terminal.

Each action works on the file as saved, as the command would, and goes the
command's way (``ChatSession`` for ``chat``, ``fork`` for ``fork``,
``SnapshotManager`` and ``InstanceManager`` for ``import`` + ``run``). What the
command would print goes to the editor's log (``Editor.log``), and model-written
code that needs the user's approval is put to the user (``Editor.ask``): the
project's ``approve`` setting and ``DOMARKX_YES`` apply as on the command line,
and nothing is approved without one of them or an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from domarkx.data.models import Message, OutputBlock
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.session.approval import Answer, Approval, CodeRequest, for_project
from domarkx.session.chat import ChatSession
from domarkx.session.fork import fork
from domarkx.session.instance import InstanceManager
from domarkx.session.names import display_path
from domarkx.session.snapshot import SnapshotManager


class Editor(Protocol):
    """The user at the other end: a log to write to, a question to ask."""

    def log(self, text: str) -> None: ...

    def ask(self, request: CodeRequest) -> Answer: ...


class LineLog:
    """The model's reply as it streams, passed on a whole line at a time."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.pending = ""

    def __call__(self, chunk: str) -> None:
        self.pending += chunk
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.log(line)

    def end(self) -> None:
        if self.pending:
            self.log(self.pending)
            self.pending = ""


def approval(store: Store, editor: Editor) -> Approval:
    """The grant of ``domarkx run``/``chat`` without ``--yes``, asking in the editor."""
    granted = for_project(store.root)
    granted.ask = editor.ask
    return granted


def answer(path: Path, editor: Editor, *, regenerate: bool = False) -> str:
    """``domarkx chat FILE`` (``--regenerate``): append the model's answer to the file."""
    store = Store.discover(path.parent)
    stream = LineLog(editor.log)

    def show(message: Message) -> None:
        stream.end()
        for block in message.content:
            if isinstance(block, OutputBlock) and block.text:
                editor.log(f"[{block.stream}] {block.text}")

    session = ChatSession(
        store,
        path,
        approval=approval(store, editor),
        regenerate=regenerate,
        stream=stream,
        on_message=show,
    )
    session.prepare()
    if not session.pending:
        raise DomarkxError(
            "the document does not end with a user message: there is nothing to answer",
            file=session.display,
            hint="add a `## user` message at the end",
        )
    failed = True
    try:
        session.start()
        added = session.answer()
        failed = False
    finally:
        stream.end()
        session.close(failed=failed)
    count = f"{len(added)} message{'' if len(added) == 1 else 's'}"
    if regenerate:
        return f"replaced the last answer in {session.display} with {count}"
    return f"appended {count} to {session.display}"


def fork_here(path: Path, messages: int) -> Path:
    """``domarkx fork FILE --messages N -o NEW`` with NEW a free name beside FILE."""
    store = Store.discover(path.parent)
    output = free_name(path, messages)
    fork(path, messages, output, store.root)
    return output


def free_name(path: Path, messages: int) -> Path:
    """``q-fork-3.md`` beside ``q.md`` (``q-fork-3-2.md`` when that is taken, ...)."""
    base = f"{path.stem}-fork-{messages}"
    candidate = path.with_name(f"{base}{path.suffix}")
    number = 2
    while candidate.exists():
        candidate = path.with_name(f"{base}-{number}{path.suffix}")
        number += 1
    return candidate


def run(path: Path, editor: Editor) -> str:
    """``domarkx import FILE`` then ``domarkx run`` of the snapshot: the instance's fate."""
    store = Store.discover(path.parent)
    imported = SnapshotManager(store).import_file(path)
    snapshot_id = imported.snapshot.snapshot_id
    editor.log(f"imported {display_path(path, store.root)} as snapshot {snapshot_id[:12]}")
    manager = InstanceManager(store, approval=approval(store, editor))
    stream = LineLog(editor.log)
    try:
        instance = manager.run(snapshot_id, stream=stream)
    finally:
        stream.end()
    short = instance.instance_id[:12]
    for message in instance.conversation:
        for block in message.content:
            if isinstance(block, OutputBlock) and block.text:
                editor.log(f"[{block.stream}] {block.text}")
    summary = f"instance {short}: {instance.status}"
    if instance.status == "failed" and instance.error:
        summary += f" ({instance.error})"
    return f"{summary}; `domarkx export {short}` shows it"
