"""``domarkx chat FILE``: answer the document's last user message and append the reply to it."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from domarkx.cli.options import Args, Subparsers, add_command, add_yes, open_store, parse_params
from domarkx.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from domarkx.cli.chat_terminal import Terminal
    from domarkx.data.models import Message, SessionSnapshot
    from domarkx.data.store import Store
    from domarkx.session.chat import ChatSession


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "chat",
        run,
        help="answer a session's user message and append the reply to its file",
        description="When FILE ends with a user message (or -m adds one), run it with its model "
        "and append the new messages to FILE, keeping every byte that was there. On a terminal, "
        "with nothing to answer, ask for messages one after the other (one sandbox for the "
        "whole chat). A FILE that does not exist yet is made from [defaults] of the project's "
        "domarkx.toml. See docs/chat.md.",
    )
    parser.add_argument("file", metavar="FILE", help="the session document (Markdown)")
    parser.add_argument(
        "-m",
        "--message",
        metavar="TEXT",
        help="append TEXT as a new `## user` message first (`-m -`: read it from standard input)",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="replace the messages after the last user message with a fresh answer",
    )
    add_yes(parser)
    parser.add_argument(
        "--model", metavar="NAME", help="ask this model for this chat (the document keeps its own)"
    )
    parser.add_argument(
        "--system",
        metavar="TEXT",
        help="the system message for this chat (not written to the document)",
    )
    parser.add_argument(
        "--param", action="append", metavar="K=V", help="value of a parameter macro (repeatable)"
    )


def run(args: Args) -> int:
    # reason: start-up; the chat loads the session runtime and the models (~200 ms CPU),
    # which `domarkx --help` and the other commands do not pay
    from domarkx.cli.chat_terminal import HELP, Terminal
    from domarkx.llm.provider import events  # reason: the same
    from domarkx.session.agents import Agents  # reason: the same
    from domarkx.session.approval import for_project  # reason: the same
    from domarkx.session.chat import ChatSession  # reason: the same

    if args.regenerate and args.message is not None:
        raise UsageError(
            "--regenerate answers the last user message again; it takes no -m",
            hint="run `domarkx chat FILE -m TEXT` for a new question",
        )
    message = args.message
    if message == "-":
        message = sys.stdin.read()
    if message is not None and not message.strip():
        raise UsageError(
            "-m needs the text of the message"
            + (" (standard input was empty)" * (args.message == "-")),
            hint='write e.g. -m "What next?"',
        )
    path = Path(args.file)
    # The document's project (its configuration, store, replay records), not the current
    # folder's: `domarkx chat proj/sessions/f.md` from anywhere.
    store = open_store(path)
    created = _create(store, path) if not path.exists() and message is not None else None
    terminal = Terminal()
    # --yes (or DOMARKX_YES), else `approve` of the project's configuration, asking
    # on a terminal: the same grant as `domarkx run` and `domarkx build`.
    approval = for_project(store.root, yes=args.yes)
    session = ChatSession(
        store,
        path,
        approval=approval,
        # The session tools (send_message...): other sessions answer with the same grant.
        host_tools=Agents(store, approval, (path,)).tools(),
        params=parse_params(args.param),
        regenerate=args.regenerate,
        stream=terminal.write,
        on_message=terminal.show_message,
        adjust=_for_this_chat(args.model, args.system),
    )
    watching = events.set(terminal.events)
    failed = True
    try:
        session.prepare(message)
        converse = not session.pending
        if converse:
            if not terminal.interactive:
                raise UsageError(
                    f"{session.display} does not end with a user message, and without a "
                    "terminal there is nobody to ask for one",
                    hint="pass the question with -m TEXT, or end the document with a "
                    "`## user` message",
                )
            terminal.check_prompt()
        session.start()
        if converse:
            terminal.note(f"chat with {session.display}; {HELP}")
            while (text := terminal.read_message()) is not None:
                _report(terminal, session, session.ask(text))
        else:
            _report(terminal, session, session.answer(), replaced=args.regenerate)
        failed = False
    except KeyboardInterrupt:
        terminal.events.stop()
        if session.instance is not None:
            ident = session.instance.instance_id[:12]
            session.store.keep_instance(session.instance.instance_id)  # prune leaves it
            terminal.note(
                f"interrupted: nothing more was written to {session.display}; instance {ident} "
                f"keeps the conversation with your question (`domarkx export {ident}` shows it)"
            )
        raise
    finally:
        terminal.events.stop()
        events.reset(watching)
        terminal.end_turn()
        session.close(failed=failed)
        if created is not None and failed:
            _remove_if_unchanged(path, created)
    return 0


def _for_this_chat(
    model: str | None, system: str | None
) -> Callable[[SessionSnapshot], SessionSnapshot] | None:
    """``--model``/``--system`` as a change to each import of the document (None: none)."""
    if model is None and system is None:
        return None

    def adjust(snapshot: SessionSnapshot) -> SessionSnapshot:
        # reason: start-up; the models load pydantic (~115 ms CPU), which `domarkx --help` does not
        from domarkx.data.models import ExecutionConfig, Message, ModelSettings, TextBlock

        update: dict[str, object] = {}
        if model is not None:
            config = snapshot.config()
            settings = config.model or ModelSettings()
            settings = settings.model_copy(update={"name": model})
            update["execution_config"] = ExecutionConfig.model_validate(
                {**config.model_dump(exclude_unset=True), "model": settings.model_dump()}
            )
        if system is not None:
            conversation = list(snapshot.conversation)
            if conversation and conversation[0].role == "system":
                conversation = conversation[1:]
            head = Message(role="system", content=[TextBlock(value=system)])
            update["conversation"] = [head, *conversation]
        return snapshot.model_copy(update=update)

    return adjust


def _create(store: Store, path: Path) -> bytes:
    """A new session document at ``path`` from ``[defaults]`` of the project's configuration."""
    import yaml  # reason: start-up; PyYAML costs ~17 ms CPU, which `domarkx --help` does not pay

    # reason: start-up; the configuration loads pydantic (~120 ms CPU)
    from domarkx import config

    settings = config.load(store.root)
    if not settings.defaults.get("model"):
        raise UsageError(
            f"{path} does not exist, and the project's configuration has no [defaults] model "
            "to start a new session with",
            hint=f"add to {settings.describe()}:\n    [defaults.model]\n"
            '    endpoint = "NAME"   # or base_url = "http://127.0.0.1:8080/v1"\n'
            '    name = "MODEL"\nor write the document yourself (docs/chat.md)',
        )
    body = yaml.safe_dump(settings.defaults, sort_keys=False, allow_unicode=True)
    text = f"```yaml session-config\n{body}```\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return b""  # made meanwhile: it is the user's
    with os.fdopen(fd, "wb") as f:
        f.write(text)
    return text


def _remove_if_unchanged(path: Path, created: bytes) -> None:
    """A document this chat made and could not answer goes again (nothing half-made stays)."""
    with contextlib.suppress(OSError):
        if created and path.read_bytes() == created:
            path.unlink()


def _report(
    terminal: Terminal, session: ChatSession, added: list[Message], *, replaced: bool = False
) -> None:
    count = len(added)
    messages = f"{count} message{'' if count == 1 else 's'}"
    if not count:
        terminal.note(f"nothing to append to {session.display}")
    elif replaced:  # --regenerate: the old answer is gone from the file
        terminal.note(f"replaced the last answer in {session.display} with {messages}")
    else:
        terminal.note(f"appended {messages} to {session.display}")
    for outcome in session.checked:  # the expect block of the message answered
        result = outcome.result
        status = "passed" if result.passed else f"FAILED: {result.detail}"
        terminal.note(f"{outcome.where}: {result.kind}: {status}")
