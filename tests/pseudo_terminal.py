"""Drive a command through a real pseudo-terminal, as a person at a terminal would.

``PseudoTerminal(argv)`` starts the command with a new pty as its standard
input, output and error; ``expect(text)`` reads what it shows until ``text``
appears (bounded by a timeout); ``send(keys)`` types. Escape sequences stay in
what is read: search for plain words.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence


class PseudoTerminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        rows: int = 40,
        cols: int = 120,
    ) -> None:
        self.fd, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.process = subprocess.Popen(
            list(argv),
            stdin=child,
            stdout=child,
            stderr=child,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(child)
        self.seen = ""  # everything shown so far
        self._pending = b""

    def expect(self, text: str, timeout: float = 30) -> str:
        """What was shown up to and including ``text``; TimeoutError if it never comes."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.2)) and self.process.poll() is not None):
                if text.encode() in self._pending:
                    break
                raise TimeoutError(f"{text!r} not shown; the end of the screen: {self.tail()!r}")
        end = self._pending.index(text.encode()) + len(text.encode())
        shown, self._pending = self._pending[:end], self._pending[end:]
        return shown.decode("utf-8", "replace")

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 30) -> int:
        """The exit status, reading what is left so the command never blocks on output."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def tail(self) -> str:
        return self._pending[-1500:].decode("utf-8", "replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the command closed the terminal (it exited)
            return False
        self._pending += data
        self.seen += data.decode("utf-8", "replace")
        return bool(data)

    def __enter__(self) -> PseudoTerminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
