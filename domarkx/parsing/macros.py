"""Macro expansion: ``[@text](domarkx://command?key=value)[key2](value2)`` links.

Macros are expanded once, at import, inside text (not inside code). A
command is looked up in the ``domarkx.macros`` registry; any other command is
a parameter, taken from ``--param`` or the front matter's ``params``. What a
macro returns is expanded again, so includes nest. The expander records every
file it read, because the build graph declares them as dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from domarkx import registry
from domarkx.config import DEFAULT_EXPANSION, size_in_bytes
from domarkx.data.models import Message, TextBlock
from domarkx.errors import DocumentError, DomarkxError, MacroError, PluginError
from domarkx.parsing.blocks import is_open_at_end, quote, trim_blank_lines
from domarkx.parsing.macro_links import (
    MacroMatch,
    command_and_params,
    escape_macros,
    find_macros,
    is_macro,
    mask_code,
)
from domarkx.parsing.markdown import ParsedSession, append_block, parse_body

if TYPE_CHECKING:
    from domarkx.config import ProjectConfig

GROUP = "domarkx.macros"
MAX_DEPTH = 32

# Expansion of one document, by default (``[limits] expansion`` in domarkx.toml).
DEFAULT_MAX_EXPANSION = size_in_bytes(DEFAULT_EXPANSION)


class MacroContext(Protocol):
    """What a macro function is given: the contract a plugin macro is written against.

    ``MacroCall`` is the implementation; a plugin should use only these members.
    """

    # The command of the link: ``shout`` for ``domarkx://shout?x=1``.
    command: str
    # The query parameters (``?key=value&...``) and trailing ``[key](value)`` links, decoded.
    params: dict[str, str]
    # The link text: ``hello`` for ``[@hello](domarkx://shout)``.
    text: str
    # The file the macro stands in (the session, or the included file it came from).
    file: Path
    # Its line in ``file`` (1-based).
    line: int

    # The project root: relative paths a plugin reads should resolve against it.
    @property
    def root(self) -> Path: ...

    # Declare files the result depends on: they become build dependencies of the
    # session, so editing one of them rebuilds it (a missing file counts too: its
    # creation is a change).
    def depends_on(self, *paths: str | os.PathLike[str]) -> None: ...

    # Read a text file (UTF-8) and declare it as a dependency in one step.
    def read_text(self, path: str | os.PathLike[str]) -> str: ...

    # A MacroError pointing at this macro (file, line, include chain) for the
    # plugin to raise: the user sees one line, no traceback.
    def error(self, message: str, hint: str | None = None) -> MacroError: ...


class Macro(Protocol):
    """A macro command: what a ``domarkx.macros`` entry point names.

    It returns the text that replaces the link (macros in it are expanded in
    turn) or an ``Expansion`` whose macros resolve relative to another file;
    an ``Expansion``'s file is a dependency without being declared. Any file
    it reads otherwise must go through ``call.read_text`` or
    ``call.depends_on``, or editing that file would not rebuild the session.
    """

    def __call__(self, call: MacroContext, /) -> str | Expansion: ...


@dataclass
class MacroCall:
    """What a macro function receives: its command, parameters and where it stands.

    Implements ``MacroContext``; ``expander`` and ``chain`` are domarkx's own.
    """

    command: str
    params: dict[str, str]
    text: str
    file: Path
    line: int
    expander: MacroExpander
    chain: tuple[tuple[Path, int], ...] = ()

    @property
    def root(self) -> Path:
        return self.expander.root

    def depends_on(self, *paths: str | os.PathLike[str]) -> None:
        """Record ``paths`` (relative to the project root) as files the result depends on."""
        for path in paths:
            self.expander.included.add((self.expander.root / path).absolute())

    def read_text(self, path: str | os.PathLike[str]) -> str:
        """The text of ``path`` (relative to the project root), recorded as a dependency."""
        target = self.expander.root / path
        self.depends_on(target)
        try:
            return target.read_text(encoding="utf-8")
        except OSError as err:
            raise self.error(
                f"macro `{self.command}` cannot read {self.expander.display(target)}: "
                f"{err.strerror or err}"
            ) from None
        except UnicodeDecodeError as err:
            raise self.error(
                f"macro `{self.command}`: {self.expander.display(target)} is not UTF-8 ({err.reason})"
            ) from None

    def error(self, message: str, hint: str | None = None) -> MacroError:
        """A MacroError at this macro, naming the include chain that led here."""
        if len(self.chain) > 1:
            path = " -> ".join(f"{self.expander.display(f)}:{n}" for f, n in self.chain)
            message = f"{message} (include chain: {path})"
        return MacroError(message, file=self.expander.display(self.file), line=self.line, hint=hint)


@dataclass
class Expansion:
    """A macro result whose own macros resolve relative to ``file`` (as include does)."""

    text: str
    file: Path


# The name older plugins and domarkx's own code use for a macro function.
MacroFunction = Macro


@dataclass
class MacroExpander:
    """Expands the macros of a parsed session; ``included`` lists the files read."""

    root: Path
    params: Mapping[str, str] = field(default_factory=dict)
    front_matter_params: dict[str, Any] = field(default_factory=dict)
    included: set[Path] = field(default_factory=set)
    # The folder that included files must lie in (real paths); None: ``root``.
    # See domarkx.session.files.
    confine: Path | None = None
    # The project's configuration, read when a macro first needs it (a document
    # without macros does not depend on it); None: the defaults.
    project: Callable[[], ProjectConfig] | None = None
    # The characters macros produced so far (``[limits] expansion`` bounds them).
    produced: int = 0
    _settings: tuple[tuple[str, ...], int] | None = field(default=None, init=False, repr=False)

    def settings(self) -> tuple[tuple[str, ...], int]:
        """The project's ``[includes] allow`` patterns and ``[limits] expansion`` in bytes."""
        if self._settings is None:
            if self.project is None:
                self._settings = ((), DEFAULT_MAX_EXPANSION)
            else:
                found = self.project()
                limit = size_in_bytes(found.limits.expansion)
                self._settings = (tuple(found.includes.allow), limit)
        return self._settings

    def display(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def expand_session(self, parsed: ParsedSession) -> ParsedSession:
        """A copy of ``parsed`` with every macro of its text expanded."""
        source = Path(parsed.source_path)
        fm_params = parsed.front_matter.get("params") or {}
        self.front_matter_params = fm_params if isinstance(fm_params, dict) else {}
        # A shallow copy is enough: every message that changes is rebuilt below,
        # and a deep copy of a whole session costs more than the expansion.
        result = parsed.model_copy(
            update={"messages": list(parsed.messages), "block_lines": list(parsed.block_lines)}
        )
        if result.preamble is not None:
            line = result.preamble_line or 1
            expanded = self.expand_text(result.preamble, source, line)
            if expanded != result.preamble:
                parse_body(expanded, parsed.source_file, line)  # rejects role headings
                if is_open_at_end(expanded) and not is_open_at_end(result.preamble):
                    raise _left_open(parsed.source_file, line)
            # Read as the export will be read: no blank lines around, and a
            # preamble that expands to nothing is no preamble.
            expanded = trim_blank_lines(expanded)
            result.preamble = expanded if expanded.strip() else None
        for index, message in enumerate(result.messages):
            lines = result.block_lines[index]
            result.messages[index], result.block_lines[index] = self._expand_message(
                message, lines, source, parsed.source_file
            )
        return result

    def _expand_message(
        self, message: Message, lines: list[int], source: Path, display: str
    ) -> tuple[Message, list[int]]:
        content: list[Any] = []
        new_lines: list[int] = []
        for block, line in zip(message.content, lines, strict=True):
            if not isinstance(block, TextBlock):
                content.append(block)
                new_lines.append(line)
                continue
            value = self.expand_text(block.value, source, line)
            if value == block.value:
                append_block(content, new_lines, block, line)
                continue
            # Included text may bring code blocks or quotes: re-read it as the export
            # will write it (inside its quote, if it was quoted), so that exporting and
            # importing again gives the same blocks.
            written = quote(value) if block.quoted else value
            for new_block, new_line in parse_body(written, display, line):
                if (
                    isinstance(new_block, TextBlock)
                    and not new_block.quoted
                    and is_open_at_end(new_block.value)
                ):
                    raise _left_open(display, new_line)
                append_block(content, new_lines, new_block, new_line)
        return message.model_copy(update={"content": content}), new_lines

    def expand_text(
        self,
        text: str,
        file: Path,
        line: int,
        chain: tuple[tuple[Path, int], ...] = (),
        depth: int = 0,
    ) -> str:
        """``text`` (which starts at ``line`` of ``file``) with its macros expanded."""
        if "domarkx://" not in text:
            return text
        chain = chain or ((file, line),)
        masked = mask_code(text)
        pieces: list[str] = []
        position = 0
        match_line = line
        for match in find_macros(masked):
            if not is_macro(masked, match):
                continue
            match_line += text.count("\n", position, match.start())
            pieces.append(text[position : match.start()])
            position = match.end()
            call = self._call(match, file, match_line, chain)
            if depth >= MAX_DEPTH:
                raise call.error(
                    f"macros nest deeper than {MAX_DEPTH} levels",
                    hint="a macro's result keeps producing macros; break the loop",
                )
            result = self._run(call)
            self._count(call, len(result.text if isinstance(result, Expansion) else result))
            if isinstance(result, Expansion):
                next_chain = (*chain[:-1], (file, match_line), (result.file, 1))
                pieces.append(self.expand_text(result.text, result.file, 1, next_chain, depth + 1))
            else:
                pieces.append(self.expand_text(str(result), file, match_line, chain, depth + 1))
        pieces.append(text[position:])
        result = "".join(pieces)
        # Results put side by side can form a macro that none of them held; it is
        # not expanded, and a backslash keeps it from being read as one on import.
        return escape_macros(result) if depth == 0 and result != text else result

    def _count(self, call: MacroCall, size: int) -> None:
        """Count what a macro produced; past ``max_expansion``, an error at the macro.

        Every macro's result is counted when it is produced, before its own macros
        are expanded, so the expanded text is never larger than the document plus
        what was counted: nested includes cannot multiply it past the bound.
        """
        self.produced += size
        limit = self.settings()[1]
        if self.produced > limit:
            raise call.error(
                f"macros expand this document past {_size(limit)} "
                f"(at `[@{call.text}](domarkx://{call.command})`)",
                hint="include or set less text, or raise `expansion` under `[limits]` "
                "in domarkx.toml",
            )

    def _call(
        self, match: MacroMatch, file: Path, line: int, chain: tuple[tuple[Path, int], ...]
    ) -> MacroCall:
        command, params = command_and_params(match)
        return MacroCall(
            command=command,
            params=params,
            text=match.group("text"),
            file=file,
            line=line,
            expander=self,
            chain=(*chain[:-1], (file, line)),
        )

    def _run(self, call: MacroCall) -> str | Expansion:
        # A third-party command that cannot be imported, or that fails, is reported at
        # the macro like any other error (``--debug`` shows the plugin's traceback).
        try:
            function = registry.find(GROUP, call.command)
        except PluginError as err:
            raise call.error(err.message, hint=err.hint) from err
        if function is not None:
            try:
                result: str | Expansion = function(call)
            except DomarkxError:
                raise
            except Exception as err:
                raise call.error(
                    f"macro `{call.command}` failed: {type(err).__name__}: {err}"
                ) from err
            if isinstance(result, Expansion):
                call.depends_on(result.file)
            return result
        if call.command in self.params:
            return self.params[call.command]
        if call.command in self.front_matter_params:
            return str(self.front_matter_params[call.command])
        unknown = registry.unknown(GROUP, call.command)
        raise call.error(
            f"{unknown.message} (in `[@{call.text}](domarkx://{call.command})`)",
            hint=f"pass `--param {call.command}=VALUE`, add `{call.command}` under `params:` "
            "in the front matter, or use a known macro",
        )


def _left_open(file: str, line: int) -> DocumentError:
    """A macro result that would take in what follows it in the document."""
    return DocumentError(
        "macro results leave a block open (an HTML block or comment, or a fence, "
        "never closed): it would take in the rest of the document",
        file=file,
        line=line,
        hint="close the block in the macro's value (e.g. `-->` after `<!--`)",
    )


def _size(size: int) -> str:
    """``10485760`` -> ``10 MB`` (sizes in powers of 1024, as domarkx.toml writes them)."""
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def register_macro(name: str, function: MacroFunction) -> None:
    """Register a macro command at run time (a plugin would use an entry point)."""
    registry.register(GROUP, name, function)
