"""``domarkx chat FILE``: answer the document's last user message and append the reply to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domarkx.cli.options import Args, Subparsers, add_command, open_store, parse_params

if TYPE_CHECKING:
    from domarkx.cli.chat_terminal import Terminal
    from domarkx.data.models import Message
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
        "whole chat). See docs/chat.md.",
    )
    parser.add_argument("file", metavar="FILE", help="the session document (Markdown)")
    parser.add_argument(
        "-m", "--message", metavar="TEXT", help="append TEXT as a new `## user` message first"
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="replace the messages after the last user message with a fresh answer",
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="run the model's code on this machine without asking (local_shell)",
    )
    parser.add_argument(
        "--param", action="append", metavar="K=V", help="value of a parameter macro (repeatable)"
    )


def run(args: Args) -> int:
    from pathlib import Path

    from domarkx.cli.chat_terminal import HELP, Terminal
    from domarkx.errors import UsageError
    from domarkx.session.approval import for_project
    from domarkx.session.chat import ChatSession

    if args.regenerate and args.message is not None:
        raise UsageError(
            "--regenerate answers the last user message again; it takes no -m",
            hint="run `domarkx chat FILE -m TEXT` for a new question",
        )
    if args.message is not None and not args.message.strip():
        raise UsageError("-m needs the text of the message", hint='write e.g. -m "What next?"')
    terminal = Terminal()
    store = open_store()
    session = ChatSession(
        store,
        Path(args.file),
        # --yes (or DOMARKX_YES), else `approve` of the project's configuration, asking
        # on a terminal: the same grant as `domarkx run` and `domarkx build`.
        approval=for_project(store.root, yes=args.yes),
        params=parse_params(args.param),
        regenerate=args.regenerate,
        stream=terminal.write,
        on_message=terminal.show_message,
    )
    session.prepare(args.message)
    converse = not session.pending
    if converse:
        if not terminal.interactive:
            raise UsageError(
                f"{session.display} does not end with a user message, and without a terminal "
                "there is nobody to ask for one",
                hint="pass the question with -m TEXT, or end the document with a `## user` message",
            )
        terminal.check_prompt()
    failed = True
    try:
        session.start()
        if converse:
            terminal.note(f"chat with {session.display}; {HELP}")
            while (text := terminal.read_message()) is not None:
                _report(terminal, session, session.ask(text))
        else:
            _report(terminal, session, session.answer(), replaced=args.regenerate)
        failed = False
    finally:
        terminal.end_turn()
        session.close(failed=failed)
    return 0


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
