"""What ``domarkx chat`` shows and asks: the streamed reply, code outputs, tool calls,
and (on a terminal) the multi-line prompt for the next message.

The reply and its outputs go to standard output, so ``domarkx chat F -m Q >
answer.md`` keeps the answer; questions and notes go to standard error. Whether
model-written code may run is asked as every command asks it
(``approval.terminal_prompt``). The prompt uses prompt_toolkit (the optional
extra ``domarkx[chat]``), imported only when a chat is interactive.

What a model sent is shown with its control characters made visible
(``approval.visible``): a reply cannot move the cursor, clear a line or hide
text. While the model has not started its reply, a spinner on standard error
(a terminal only) says who is being waited for; reasoning is shown dimmed
there; a reply taken from a replay record is marked ``(replayed)``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from domarkx.data.models import Message, OutputBlock
from domarkx.errors import DomarkxError
from domarkx.llm.messages import render_blocks
from domarkx.llm.provider import ReplyEvents
from domarkx.session.approval import visible
from domarkx.session.export import fence, info_string

PROMPT = "you> "
CONTINUATION = "...> "
HELP = "Enter sends; Alt-Enter (or Esc, Enter) starts a new line; Ctrl-D ends the chat"
SPINNER = "|/-\\"
DIM, PLAIN = "\x1b[2m", "\x1b[0m"


class TerminalEvents(ReplyEvents):
    """The spinner, the dimmed reasoning and the ``(replayed)`` mark of one terminal."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._thinking = False

    def asking(self, model: str | None) -> None:
        if not _isatty(self.terminal.err):
            return
        self.stop()
        stop = threading.Event()
        label = f"waiting for {visible(model or 'the model')} (Ctrl-C stops)"

        def spin() -> None:
            n = 0
            while not stop.wait(0.1 if n else 0.3):
                with self._lock:
                    if stop.is_set():
                        break
                    self.terminal.err.write(f"\r{SPINNER[n % len(SPINNER)]} {label}")
                    self.terminal.err.flush()
                n += 1

        self._stop = stop
        self._thread = threading.Thread(target=spin, name="domarkx-spinner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take the spinner off the screen (before anything else is written)."""
        stop, thread = self._stop, self._thread
        if stop is None or thread is None:
            return
        self._stop = self._thread = None
        with self._lock:
            stop.set()
        thread.join()
        self.terminal.err.write("\r\x1b[K")
        self.terminal.err.flush()

    def thought(self, text: str) -> None:
        self.stop()
        if not _isatty(self.terminal.err):
            return  # kept in the message's metadata (`thought`), shown on a terminal only
        self.terminal.end_turn()
        self._thinking = True
        self.terminal.err.write(f"{DIM}{visible(text)}{PLAIN}")
        self.terminal.err.flush()

    def end_thought(self) -> None:
        if self._thinking:
            self._thinking = False
            self.terminal.err.write("\n")
            self.terminal.err.flush()

    def replayed(self) -> None:
        self.stop()
        self.terminal.end_turn()
        self.terminal.err.write("(replayed) ")
        self.terminal.err.flush()


class Terminal:
    """The user's side of a chat: standard input, output and error."""

    def __init__(
        self,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self._line_start = True  # whether the last thing written to ``out`` ended a line
        self._gap = False  # a message ended: the next text starts after a blank line
        self._session: Any = None
        self.events = TerminalEvents(self)

    @property
    def interactive(self) -> bool:
        """The chat can hold a conversation: standard input and output are a terminal."""
        return _isatty(self.stdin) and _isatty(self.out)

    # The turn as it comes ---------------------------------------------------------
    def write(self, chunk: str) -> None:
        """A piece of the model's reply, shown as it arrives."""
        if not chunk:
            return
        self.events.stop()
        self.events.end_thought()
        if self._gap:  # a new message: a blank line after the one before
            self._gap = False
            self.end_turn()
            self._put("\n")
        self._put(visible(chunk))

    def show_message(self, message: Message) -> None:
        """A finished message: the tools it called, the outputs of its code, a tool's result."""
        self.events.stop()
        self.events.end_thought()
        metadata = message.message_metadata or {}
        if message.role == "tool":
            name = metadata.get("name") or "tool"
            self._block(f"[{name} result]\n{render_blocks(message.content)}\n")
        else:
            for call in metadata.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._block(f"[tool call {call.get('name')}({call.get('arguments', '')})]\n")
            for block in message.content:
                if isinstance(block, OutputBlock):
                    self._block(fence(block.text, info_string(block)) + "\n")
        self._gap = True

    def end_turn(self) -> None:
        """End the line the reply left open."""
        self._gap = False
        if not self._line_start:
            self._put("\n")

    def _put(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self._line_start = text.endswith("\n")

    def note(self, text: str) -> None:
        self.events.stop()
        self.events.end_thought()
        self.end_turn()
        self.err.write(f"domarkx: {text}\n")
        self.err.flush()

    def _block(self, text: str) -> None:
        self.end_turn()
        self._put("\n" + visible(text))

    # The next message -----------------------------------------------------------------
    def check_prompt(self) -> None:
        """prompt_toolkit is there (the ``chat`` extra), before any sandbox starts."""
        try:
            import prompt_toolkit  # noqa: F401  # reason: an optional dependency, probed
        except ImportError:
            raise DomarkxError(
                "an interactive chat needs the prompt_toolkit package",
                hint="pip install 'domarkx[chat]', or pass the message with -m TEXT",
            ) from None

    def read_message(self) -> str | None:
        """The user's next message (several lines allowed); None ends the chat."""
        self.end_turn()
        session = self._prompt_session()
        while True:
            try:
                text = session.prompt(PROMPT)
            except EOFError:  # Ctrl-D
                return None
            except KeyboardInterrupt:  # Ctrl-C drops what was typed, as in a shell
                continue
            if text.strip():
                return str(text)
            # A stray Enter sends nothing and ends nothing: Ctrl-D ends the chat.
            self.err.write("domarkx: (nothing sent; Ctrl-D ends the chat)\n")
            self.err.flush()

    def _prompt_session(self) -> Any:
        if self._session is None:
            # reason: an optional dependency (domarkx[chat]), needed only on a terminal
            from prompt_toolkit import PromptSession
            from prompt_toolkit.key_binding import KeyBindings  # reason: the same

            keys = KeyBindings()

            @keys.add("enter")
            def _send(event: Any) -> None:
                event.current_buffer.validate_and_handle()

            @keys.add("escape", "enter")
            def _new_line(event: Any) -> None:
                event.current_buffer.insert_text("\n")

            self._session = PromptSession(
                multiline=True,
                key_bindings=keys,
                prompt_continuation=lambda width, line, wrapped: CONTINUATION.rjust(width),
            )
        return self._session


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
