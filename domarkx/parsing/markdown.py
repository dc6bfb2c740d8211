"""Session documents (Markdown) to a ``ParsedSession``, with a line for every piece.

The jobs are split by module: ``source`` decodes bytes and splits off the
front matter, ``blocks`` finds the top-level headings, fences and text (a
CommonMark parser decides), ``fences`` reads info strings, ``data`` loads the
YAML and JSON of special blocks. This module builds the session from those
pieces: the blocks before the first role heading (preamble, ``session-config``,
``setup-script``), then the messages and their content blocks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, ValidationError

from domarkx.data.models import (
    CodeBlock,
    ExecutionConfig,
    Message,
    OutputBlock,
    Role,
    ScriptBlock,
    TextBlock,
)
from domarkx.data.source import read_regular
from domarkx.errors import DocumentError
from domarkx.parsing.blocks import (
    Block,
    FencedCode,
    Heading,
    Text,
    blocks,
    leading_blocks,
    raw_text,
    text_value,
)
from domarkx.parsing.blocks import first_line as _first
from domarkx.parsing.data import load_json, load_yaml
from domarkx.parsing.fences import SPECIAL_FLAGS, InfoString, parse_info
from domarkx.parsing.source import decode_document, front_matter_end, split_front_matter

__all__ = [
    "ROLE_ALIASES",
    "SPECIAL_FLAGS",
    "MarkdownParser",
    "ParsedSession",
    "append_block",
    "config_sources",
    "decode_document",
    "load_json",
    "load_yaml",
    "parse_body",
    "split_front_matter",
]

ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "system_message": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class ParsedSession(BaseModel):
    """A document's structure before macro expansion; ``*_line`` fields are 1-based."""

    source_file: str = Field(description="The path shown in messages (relative when possible).")
    source_path: str = Field(description="Absolute path; includes resolve against its folder.")
    front_matter: dict[str, Any] = Field(default_factory=dict)
    execution_config: dict[str, Any] | None = None
    config_format: str = "yaml"
    config_line: int | None = None
    setup_script: ScriptBlock | None = None
    setup_output: list[OutputBlock] = Field(
        default_factory=list, description="The output fences right after the setup script."
    )
    preamble: str | None = None
    preamble_line: int | None = None
    messages: list[Message] = Field(default_factory=list)
    message_lines: list[int] = Field(default_factory=list)
    block_lines: list[list[int]] = Field(
        default_factory=list, description="For each message, the line of each content block."
    )


def read_document(path: Path, display: str) -> bytes:
    """A session document's bytes; a missing or unreadable file (or a FIFO, a device)
    is one clear error."""
    try:
        return read_regular(path)
    except FileNotFoundError:
        raise DocumentError(
            "no such file", file=display, hint="check the path of the session document"
        ) from None
    except IsADirectoryError:
        raise DocumentError("is a folder, not a session document", file=display) from None
    except OSError as err:
        raise DocumentError(f"cannot read: {err.strerror}", file=display) from None


class MarkdownParser:
    """Parses a session document into a ``ParsedSession`` (spec section 1)."""

    def parse_file(self, path: Path, display: str | None = None) -> ParsedSession:
        display = display or str(path)
        data = read_document(path, display)
        # Read: no symlink loop (Path.resolve's stat after the realpath looks for one).
        real = Path(os.path.realpath(path))
        return self.parse_text(decode_document(data, display), display, real)

    def parse_text(self, text: str, display: str, path: Path | None = None) -> ParsedSession:
        front_matter, lines, _ = split_front_matter(text, display)
        parsed = ParsedSession(
            source_file=display,
            source_path=str(path or Path(display).resolve()),
            front_matter=front_matter,
        )
        found = blocks(lines)
        first_role = next(
            (i for i, block in enumerate(found) if isinstance(block, Heading)), len(found)
        )
        self._document_blocks(parsed, lines, found[:first_role])
        self._messages(parsed, lines, found[first_role:])
        return parsed

    def _document_blocks(self, parsed: ParsedSession, lines: list[str], found: list[Block]) -> None:
        file = parsed.source_file
        # Runs of neighbouring blocks, kept verbatim; a special block between two runs
        # leaves a blank line (export writes it elsewhere).
        runs: list[Text] = []
        joined = False
        after_setup = False  # output fences right after the setup script are its output
        for block in found:
            line = block.start + 1
            if isinstance(block, FencedCode):
                info = parse_info(block.info)
                if after_setup and info.special == "output":
                    parsed.setup_output.append(_output_block(info, block.code, file, line))
                    continue
                after_setup = info.special == "setup-script"
                if info.special == "session-config":
                    if parsed.execution_config is not None:
                        raise DocumentError(
                            "a second session-config block",
                            file=file,
                            line=line,
                            hint=f"merge it into the one at line {parsed.config_line}",
                        )
                    parsed.execution_config = self._config(info, block.code, file, line)
                    parsed.config_format = "json" if info.language == "json" else "yaml"
                    parsed.config_line = line
                    joined = False
                    continue
                if info.special == "setup-script":
                    if parsed.setup_script is not None:
                        raise DocumentError(
                            "a second setup-script block",
                            file=file,
                            line=line,
                            hint="a session has one setup script; merge the two",
                        )
                    parsed.setup_script = ScriptBlock(language=info.language, code=block.code)
                    joined = False
                    continue
            after_setup = False
            if parsed.preamble_line is None:
                parsed.preamble_line = _first(lines, block)
            if joined:
                runs[-1] = Text(runs[-1].start, block.end)
            else:
                runs.append(Text(block.start, block.end))
            joined = True
        if runs:
            parsed.preamble = "\n\n".join(raw_text(lines, run) for run in runs)

    def _config(self, info: InfoString, code: str, file: str, line: int) -> dict[str, Any]:
        what = "session-config"
        if info.language == "json":
            data = load_json(code, file=file, first_line=line + 1, what=what)
        else:
            data = load_yaml(code, file=file, first_line=line + 1, what=what)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DocumentError(
                "session-config must be a mapping",
                file=file,
                line=line,
                hint="write `key: value` settings, e.g. `engine: local_shell`",
            )
        try:
            ExecutionConfig.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DocumentError(
                f"session-config: {where}: {first['msg']}",
                file=file,
                line=line,
                hint="see the session-config keys in docs/session-format.md",
            ) from None
        return data

    def _messages(self, parsed: ParsedSession, lines: list[str], found: list[Block]) -> None:
        message: Message | None = None
        block_lines: list[int] = []
        for block in found:
            line = block.start + 1
            if isinstance(block, Heading):
                message = Message(role=self._role(block.text, parsed.source_file, line))
                block_lines = []
                parsed.messages.append(message)
                parsed.message_lines.append(line)
                parsed.block_lines.append(block_lines)
                continue
            assert message is not None
            if isinstance(block, Text):
                append_text(message, block_lines, lines, block)
                continue
            self._fence_block(parsed, message, block_lines, block, line)

    def _fence_block(
        self,
        parsed: ParsedSession,
        message: Message,
        block_lines: list[int],
        block: FencedCode,
        line: int,
    ) -> None:
        file = parsed.source_file
        info = parse_info(block.info)
        special = info.special
        code = block.code
        if special in ("session-config", "setup-script"):
            raise DocumentError(
                f"a {special} block inside a message",
                file=file,
                line=line,
                hint=f"move the {special} block above the first `## role` heading",
            )
        if special == "msg-metadata":
            if message.message_metadata is not None:
                raise DocumentError(
                    "a second msg-metadata block in one message",
                    file=file,
                    line=line,
                    hint="merge the two into one block",
                )
            loader = load_json if info.language == "json" else load_yaml
            data = loader(code, file=file, first_line=line + 1, what="msg-metadata")
            if data is None:  # an empty YAML block, as for session-config
                data = {}
            if not isinstance(data, dict):
                raise DocumentError(
                    "msg-metadata must be a mapping",
                    file=file,
                    line=line,
                    hint="write a JSON object or a YAML mapping",
                )
            message.message_metadata = data
            return
        if special == "output":
            previous = message.content[-1] if message.content else None
            if not isinstance(previous, CodeBlock | OutputBlock):
                raise DocumentError(
                    "an output block that follows no code block",
                    file=file,
                    line=line,
                    hint="put output blocks right after the code block that printed them",
                )
            message.content.append(_output_block(info, code, file, line))
            block_lines.append(line)
            return
        message.content.append(
            CodeBlock(
                language=info.language,
                name=info.name,
                code=code,
                attrs=info.attrs,
                flags=info.flags,
            )
        )
        block_lines.append(line)

    def _role(self, heading: str, file: str, line: int) -> Role:
        role = ROLE_ALIASES.get(heading.strip().lower())
        if role is None and heading.strip().lower() == "unknow":
            raise DocumentError(
                f"`## {heading}` is the older domarkx format's heading for tool results",
                file=file,
                line=line,
                hint=f"run `domarkx migrate {file}` (it becomes `## tool`)",
            )
        if role is None:
            raise DocumentError(
                f"unknown role heading `## {heading}`",
                file=file,
                line=line,
                hint="valid roles: system (or system_message), user, assistant, tool; "
                "use `###` for a sub-heading (and a blank line before a `---` rule)",
            )
        return role


def _output_block(info: InfoString, code: str, file: str, line: int) -> OutputBlock:
    attrs = {"name": info.name, **info.attrs} if info.name is not None else dict(info.attrs)
    exit_code: int | None = None
    if "exit_code" in attrs:
        raw = attrs.pop("exit_code")
        try:
            exit_code = int(raw)
        except ValueError:
            raise DocumentError(
                f"exit_code={raw!r} is not a whole number",
                file=file,
                line=line,
                hint="write e.g. `text output exit_code=0`",
            ) from None
    stream = attrs.pop("stream", "stdout")
    if stream != "stdout" and stream != "stderr":
        raise DocumentError(f"stream={stream!r} is not stdout or stderr", file=file, line=line)
    flags = [flag for flag in info.flags if flag not in ("output", "timed_out")]
    if flags:
        attrs["flags"] = " ".join(flags)
    return OutputBlock(
        stream=cast(Literal["stdout", "stderr"], stream),
        text=code,
        language=info.language or "text",
        exit_code=exit_code,
        timed_out="timed_out" in info.flags,
        attrs=attrs,
    )


def config_sources(text: str) -> list[str]:
    """The code of the document's ``session-config`` blocks, found as ``parse_text``
    finds them (before the first role heading, at the top level), nothing checked.

    A quick look at a document that may not parse: its front matter is skipped
    unread, and only the part before the first role heading is read.
    """
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = front_matter_end(lines)
    if end is None:
        return []  # a front matter never closed: the document does not parse
    if end:
        lines = [""] * (end + 1) + lines[end + 1 :]
    return [
        block.code
        for block in leading_blocks(lines)
        if isinstance(block, FencedCode) and parse_info(block.info).special == "session-config"
    ]


def append_text(
    message: Message, block_lines: list[int], lines: list[str], block: Text, shift: int = 0
) -> None:
    """Append a text block of ``lines`` to ``message``; ``shift`` moves its line number."""
    value = text_value(lines, block)
    text = TextBlock(value=value, quoted=block.quoted)
    append_block(message.content, block_lines, text, _first(lines, block) + shift)


def append_block(content: list[Any], lines: list[int], block: Any, line: int) -> None:
    """Append a content block; text that follows text of its kind joins it.

    Export writes two such blocks one after the other, and a reader takes them
    for one: joining them here gives the blocks the export reads back as.
    """
    previous = content[-1] if content else None
    if (
        isinstance(block, TextBlock)
        and isinstance(previous, TextBlock)
        and previous.quoted == block.quoted
    ):
        content[-1] = TextBlock(value=f"{previous.value}\n\n{block.value}", quoted=block.quoted)
        return
    content.append(block)
    lines.append(line)


def parse_body(text: str, display: str, first_line: int = 1) -> list[tuple[Any, int]]:
    """Content blocks (with lines) of a message body, e.g. a model reply or an include."""
    lines = text.split("\n")
    parser = MarkdownParser()
    holder = ParsedSession(source_file=display, source_path=display)
    message = Message(role="assistant")
    block_lines: list[int] = []
    shift = first_line - 1
    for block in blocks(lines):
        line = block.start + 1 + shift
        if isinstance(block, Heading):
            raise DocumentError(
                f"a role heading `## {block.text}` inside included or generated text",
                file=display,
                line=line,
                hint="included text goes inside a message; use `###` for its headings",
            )
        if isinstance(block, Text):
            append_text(message, block_lines, lines, block, shift)
        else:
            parser._fence_block(holder, message, block_lines, block, line)
    if message.message_metadata is not None:
        raise DocumentError(
            "a msg-metadata block inside included or generated text",
            file=display,
            line=first_line,
        )
    return list(zip(message.content, block_lines, strict=True))
