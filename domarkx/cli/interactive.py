"""``domarkx run -i``: step through an instance's blocks from a terminal.

Commands: ``n`` run the next block, ``a`` run all that are left, ``s`` show
where the run stands, ``u TEXT`` add a user message (and ask the model, when
one is configured), ``q`` quit. End of input quits too, so the loop can be
driven by a script as well as by a person.
"""

from __future__ import annotations

import sys
from typing import TextIO

from domarkx.data.models import CodeBlock, Message, OutputBlock, SessionInstance, TextBlock
from domarkx.data.store import Store
from domarkx.session.approval import Approval
from domarkx.session.blocks import BlockRef, describe_block, runnable_blocks
from domarkx.session.instance import InstanceManager

HELP = "(n)ext  (a)ll  (s)tate  (u)ser TEXT  (q)uit"


class InteractiveRun:
    def __init__(
        self,
        store: Store,
        ref: str,
        *,
        engine: str | None = None,
        keep: bool = False,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        approval: Approval | None = None,
    ) -> None:
        self.store = store
        self.keep = keep
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.manager = InstanceManager(store, echo=self.say, approval=approval)
        self.snapshot = store.get_snapshot(store.resolve_snapshot(ref))
        self.instance: SessionInstance = self.manager.create(self.snapshot, engine)
        self.done: set[tuple[int, int]] = set()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def pending(self) -> list[BlockRef]:
        return [
            ref
            for ref in runnable_blocks(self.instance.conversation, self.sandbox)
            if (ref.message, ref.index) not in self.done
        ]

    def loop(self) -> SessionInstance:
        self.sandbox = self.manager.start(self.instance, self.snapshot, keep=self.keep)
        try:
            self.say(
                f"instance {self.instance.instance_id[:12]} on {self.instance.engine}: "
                f"{len(self.pending())} code blocks to run"
            )
            if not self.manager.run_setup(self.instance, self.snapshot, self.sandbox):
                self.say(f"stopped: {self.instance.error}")
            else:
                self._commands()
            if self.instance.status == "running" and not self.keep:
                self.instance.status = "exited"
        except BaseException:
            self.instance.status = "failed"
            raise
        finally:
            self.manager.finish(self.instance, self.sandbox, keep=self.keep)
        return self.instance

    def _commands(self) -> None:
        self._show_next()
        while True:
            self.out.write("> ")
            self.out.flush()
            line = self.stdin.readline()
            if not line:
                self.say("")
                return
            command, _, rest = line.strip().partition(" ")
            if command in ("q", "quit", "exit"):
                return
            if command in ("n", "next"):
                self._run_next()
            elif command in ("a", "all"):
                while self.pending() and self._run_next():
                    pass
            elif command in ("s", "state"):
                self._state()
            elif command in ("u", "user"):
                self._user(rest)
            elif command in ("h", "help", "?", ""):
                self.say(HELP)
            else:
                self.say(f"unknown command {command!r}; {HELP}")
            if self.instance.status == "failed":
                self.say(f"stopped: {self.instance.error}")
                return

    def _show_next(self) -> None:
        pending = self.pending()
        if not pending:
            self.say("no code blocks left to run")
            return
        ref = pending[0]
        block = self.instance.conversation[ref.message].content[ref.index]
        assert isinstance(block, CodeBlock)
        self.say(f"next: {describe_block(self.instance.conversation, ref)} [{block.language}]")
        for line in block.code.splitlines()[:10]:
            self.say(f"  {line}")

    def _run_next(self) -> bool:
        pending = self.pending()
        if not pending:
            self.say("no code blocks left to run")
            return False
        ref = pending[0]
        self.done.add((ref.message, ref.index))
        ok = self.manager.run_block(self.instance, self.snapshot, self.sandbox, ref)
        for block in self.instance.conversation[ref.message].content[ref.index + 1 :]:
            if not isinstance(block, OutputBlock):
                break
            if block.text:
                self.out.write(block.text if block.text.endswith("\n") else block.text + "\n")
        self._show_next()
        return ok

    def _state(self) -> None:
        self.say(
            f"instance {self.instance.instance_id[:12]}: {self.instance.status}, "
            f"{len(self.done)} run, {len(self.pending())} left, "
            f"{len(self.instance.conversation)} messages"
        )

    def _user(self, text: str) -> None:
        if not text:
            self.say("usage: u TEXT")
            return
        self.instance.conversation.append(
            Message(role="user", content=[TextBlock(value=text, quoted=True)])
        )
        self.store.put_instance(self.instance)
        if self.snapshot.config().model is None:
            self.say("added; no model is configured, so nobody answers")
            return
        before = len(self.instance.conversation)
        self.manager.llm_turn(self.instance, self.snapshot, self.sandbox, stream=self._stream)
        self.say("")
        # The model's code already ran inside the loop: mark it done, show its output.
        conversation = self.instance.conversation
        for m in range(before, len(conversation)):
            for i, block in enumerate(conversation[m].content):
                if isinstance(block, CodeBlock):
                    self.done.add((m, i))
                elif isinstance(block, OutputBlock) and block.text:
                    self.out.write(block.text if block.text.endswith("\n") else block.text + "\n")

    def _stream(self, chunk: str) -> None:
        self.out.write(chunk)
        self.out.flush()
