"""The block protocol both engines speak to their persistent language processes.

- One process per language, started on the first block of that language: a
  POSIX shell (``bash --noprofile --norc``, or ``sh`` where an image has no
  bash) for ``bash``/``sh``/``shell``, and ``python3 -c PYTHON_DRIVER`` for
  ``python``. Variables, functions, the working directory and files persist
  between blocks, like a notebook kernel.
- Each block is written to the process's stdin, and its end is marked by a
  random token (new for every process, ``new_token``) that the process prints
  after the block: ``TOKEN:<exit status>\\n`` on stdout, ``TOKEN\\n`` on
  stderr. Output is everything before the token, byte for byte (a block need
  not end its output with a newline); ``BlockCapture`` collects it, whatever
  the transport (pipes for the local shell, an exec socket for Docker).
- Shell blocks are sent as ``command eval '<block>' </dev/null``
  (``shell_payload``): single-quoted, so nothing in the block is parsed before
  ``eval`` sees it; ``command`` keeps a syntax error from ending a POSIX
  ``sh``; stdin is ``/dev/null`` so that a block reading stdin cannot swallow
  the next block.
- Python blocks are sent length-prefixed (``python_payload``; a header
  ``LEN =N`` marks domarkx's own block, which sets the block number) to a small
  driver that ``exec``\\s them in ``__main__``'s namespace, prints tracebacks
  (without its own frame) to stderr and reports 1 on an exception, 0
  otherwise. Tracebacks name the block ``<block-N>`` and show its source
  lines. ``sys.exit(n)`` ends only the block and reports ``n``.
- Every process of a sandbox carries ``MARKER_VAR`` in its environment, so
  that a block that outlives its timeout can be killed with every process it
  started. Its result (``timed_out_result``) has ``timed_out=True``, exit
  status 124 as coreutils ``timeout``, and a note on stderr.
"""

from __future__ import annotations

import secrets
import time

from domarkx.execution.engine import BlockResult

# Environment variable that marks every process a sandbox starts.
MARKER_VAR = "DOMARKX_SANDBOX"
# Exit status reported for a block killed at its timeout (as coreutils `timeout`).
TIMEOUT_EXIT_CODE = 124

# The Python side of the protocol: argv[1] is the token. Everything lives inside
# one function that removes itself from __main__, so a block's globals() shows
# only what the block defined (and pickle finds classes in __main__).
PYTHON_DRIVER = r"""
def __domarkx_driver():
    import builtins, linecache, os, sys, traceback

    me = sys._getframe().f_code
    token = sys.argv[1].encode()
    sys.argv = [""]
    ctl = os.fdopen(os.dup(0), "rb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    ns = sys.modules["__main__"].__dict__
    ns["__builtins__"] = builtins
    count = 0
    while True:
        header = ctl.readline()
        if not header:
            return
        size, _, mode = header.decode().partition(" ")
        code = ctl.read(int(size)).decode("utf-8", "surrogateescape")
        if mode:  # "=N": domarkx's own block; the next block of the session is N + 1
            count = int(mode.strip()[1:])
            filename = "<domarkx>"
        else:
            count += 1
            filename = "<block-%d>" % count
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        status = 0
        try:
            exec(compile(code, filename, "exec"), ns)
        except SystemExit as exc:
            if exc.code is None:
                status = 0
            elif isinstance(exc.code, int):
                status = exc.code
            else:
                print(exc.code, file=sys.stderr)
                status = 1
        except BaseException as exc:
            status = 1
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is me:
                tb = tb.tb_next
            try:
                traceback.print_exception(type(exc), exc, tb)
            except Exception:
                pass
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(1, token + b":%d\n" % status)
        os.write(2, token + b"\n")


globals().pop("__domarkx_driver")()
"""


def new_token() -> str:
    """A fresh sentinel: long and random, so no output can contain it by chance."""
    return "dmx" + secrets.token_hex(16)


def shell_payload(code: str, token: str) -> bytes:
    """The line that runs ``code`` in a persistent POSIX shell and prints the sentinels."""
    quoted = "'" + code.replace("'", "'\\''") + "'"
    line = (
        f"command eval {quoted} </dev/null; "
        f"command printf '%s:%d\\n' {token} \"$?\"; "
        f"command printf '%s\\n' {token} >&2\n"
    )
    return line.encode("utf-8", "surrogateescape")


def python_payload(code: str, count: int | None = None) -> bytes:
    """A block for ``PYTHON_DRIVER``: its length in bytes on a line, then the code.

    With ``count``, the block is domarkx's own (saving or restoring a layer): it is
    not numbered, and the session's next block is numbered ``count + 1``, so that
    tracebacks read the same whether or not domarkx ran blocks of its own between.
    """
    data = code.encode("utf-8", "surrogateescape")
    if count is not None:
        return b"%d =%d\n" % (len(data), count) + data
    return b"%d\n" % len(data) + data


class BlockCapture:
    """Collects one block's stdout and stderr until both sentinels have arrived.

    Bytes that follow a sentinel (a background process writing late) are kept
    in ``rest`` for the next block, where a reader of the stream would see them.
    """

    __slots__ = ("_err_scan", "_out_scan", "err", "err_done", "out", "rest", "status", "token")

    def __init__(self, token: str, pending: dict[int, bytes] | None = None) -> None:
        self.token = token.encode()
        self.out = bytearray()
        self.err = bytearray()
        self.status: int | None = None
        self.err_done = False
        self.rest: dict[int, bytes] = {1: b"", 2: b""}
        self._out_scan = 0
        self._err_scan = 0
        for stream, data in (pending or {}).items():
            if data:
                self.feed(stream, data)

    @property
    def done(self) -> bool:
        return self.status is not None and self.err_done

    def feed(self, stream: int, data: bytes) -> None:
        if stream == 1:
            if self.status is not None:
                self.rest[1] += data
                return
            self.out += data
            self._find_out()
        elif stream == 2:
            if self.err_done:
                self.rest[2] += data
                return
            self.err += data
            i = self.err.find(self.token, self._err_scan)
            if i < 0:
                self._err_scan = max(0, len(self.err) - len(self.token))
                return
            end = i + len(self.token)
            if len(self.err) <= end:  # the newline is still on its way
                self._err_scan = i
                return
            self.rest[2] = bytes(self.err[end + 1 :])
            del self.err[i:]
            self.err_done = True

    def _find_out(self) -> None:
        i = self.out.find(self.token, self._out_scan)
        if i < 0:
            self._out_scan = max(0, len(self.out) - len(self.token))
            return
        nl = self.out.find(b"\n", i)
        if nl < 0:
            self._out_scan = i
            return
        try:
            self.status = int(self.out[i + len(self.token) + 1 : nl])
        except ValueError:
            self.status = 1
        self.rest[1] = bytes(self.out[nl + 1 :])
        del self.out[i:]

    def text(self) -> tuple[str, str]:
        return (
            self.out.decode("utf-8", "replace"),
            self.err.decode("utf-8", "replace"),
        )


def timeout_note(language: str, timeout: float) -> str:
    """The line a timed-out block adds to its stderr."""
    if language == "bash":
        process, state = "shell", "variables and working directory"
    else:
        process, state = "Python process", "variables"
    return (
        f"domarkx: the block timed out after {timeout:g} s and was killed with every "
        f"process it started; the {process} restarts for the next block "
        f"(its {state} are lost)\n"
    )


def timed_out_result(
    capture: BlockCapture, language: str, timeout: float, started: float
) -> BlockResult:
    """The result of a block killed at its timeout: what it printed until then, and a note."""
    out, err = capture.text()
    if err and not err.endswith("\n"):
        err += "\n"
    return BlockResult(
        out,
        err + timeout_note(language, timeout),
        TIMEOUT_EXIT_CODE,
        time.monotonic() - started,
        timed_out=True,
    )
