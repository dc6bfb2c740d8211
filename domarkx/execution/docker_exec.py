"""One process in a Docker container, fed on stdin, read from Docker's multiplexed socket.

Without a tty, Docker sends stdout and stderr in frames with 8-byte headers
(stream, 0, 0, 0, size); ``ExecChannel.read`` splits them and feeds the block
protocol's ``BlockCapture``.
"""

from __future__ import annotations

import contextlib
import selectors
import time
from typing import Any

from domarkx.execution.protocol import MARKER_VAR, BlockCapture


class ExecChannel:
    """One process in the container, fed on stdin, read from a multiplexed socket."""

    def __init__(self, api: Any, container: str, cmd: list[str], marker: str) -> None:
        self.api = api
        self.marker = marker
        self.exec_id = api.exec_create(
            container,
            cmd,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            environment=[f"{MARKER_VAR}={marker}"],
        )["Id"]
        # The returned object keeps the HTTP response alive (TLS closes with it).
        self._handle = api.exec_start(self.exec_id, socket=True)
        self.sock = getattr(self._handle, "_sock", self._handle)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ)
        self._frames = bytearray()
        self.eof = False
        self.pending: dict[int, bytes] = {1: b"", 2: b""}
        self.blocks = 0  # the session's blocks this process ran (not domarkx's own)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, capture: BlockCapture, wait: float | None) -> None:
        """Wait up to ``wait`` seconds for data and feed whole frames to ``capture``."""
        pending = getattr(self.sock, "pending", None)  # TLS may hold decrypted bytes
        if not (pending and pending()) and not self._sel.select(wait):
            return
        try:
            data = self.sock.recv(1 << 18)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return
        frames = self._frames
        frames += data
        pos = 0
        while len(frames) - pos >= 8:
            size = int.from_bytes(frames[pos + 4 : pos + 8], "big")
            end = pos + 8 + size
            if len(frames) < end:
                break
            stream = frames[pos]
            if stream in (1, 2):
                capture.feed(stream, bytes(frames[pos + 8 : end]))
            pos = end
        del frames[:pos]

    def exit_code(self) -> int | None:
        """The process's exit status, once Docker has seen it end."""
        for _ in range(100):
            info = self.api.exec_inspect(self.exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return None if code is None else int(code)
            time.sleep(0.01)
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sel.close()
        for closable in (self.sock, self._handle):
            with contextlib.suppress(Exception):
                closable.close()
