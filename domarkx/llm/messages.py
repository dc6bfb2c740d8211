"""Between a domarkx conversation and the chat-completions protocol.

What the model is sent (``to_chat_messages``):

- Each message's text and code blocks are written back as Markdown, joined by a
  blank line; code goes in a fenced block with its info string (language,
  ``name=``, other attributes and flags), so the model sees the document as the
  reader does.
- The output blocks of an ``assistant`` message (what its code printed) are left
  out of it and sent together as one ``user`` message right after it, starting
  with ``OUTPUT_HEADER`` ("Output of the code block above (exit code 0):" and the
  text in a fence; with several blocks, one "Block N" entry each). One domarkx
  message is thus one chat message, plus its feedback. Output blocks of any other
  message stay inline in that message, as "Output (exit code 0):".
- ``system`` and ``user`` keep their role. A ``tool`` message is sent with role
  ``tool`` only when its ``msg-metadata`` names the call it answers (``tool_call_id``,
  or the older format's ``content`` list of results with ``call_id``) and the
  assistant message before it made that call; otherwise it is sent as a ``user``
  message starting with ``TOOL_HEADER``.
- An assistant message's tool calls from ``msg-metadata`` (a ``tool_calls`` list
  in the flat ``{id, name, arguments}`` or the OpenAI form, or the older
  format's ``content`` list of ``{id, name, arguments}``)
  are sent as ``tool_calls`` when every call is answered by the ``tool`` messages
  that follow; otherwise they are described in the message's text, since servers
  refuse unanswered calls.

What the model answers (``parse_reply``) is split into text and code blocks as
a session document's message is (``domarkx.parsing.blocks``, a CommonMark
reader): only a fence at the top level is code, and a fence never closed runs
to the end of the reply.
"""

from __future__ import annotations

import json
from typing import Any

from domarkx.data.models import CodeBlock, Message, OutputBlock, TextBlock
from domarkx.llm.reply import calls_in
from domarkx.parsing.blocks import top_level_fences, trim_blank_lines
from domarkx.parsing.fences import format_info, parse_info, write_fence
from domarkx.parsing.macro_links import escape_macros

OUTPUT_HEADER = "Output of the code block"
TOOL_HEADER = "Tool result:"
# The flag of a user message's ```yaml expect``` block (domarkx.checks): never sent.
EXPECT_FLAG = "expect"


# --- conversation -> chat messages -------------------------------------------------


def to_chat_messages(conversation: list[Message]) -> list[dict[str, Any]]:
    """The OpenAI chat messages that stand for ``conversation``, in order."""
    out: list[dict[str, Any]] = []
    for message in conversation:
        if message.role == "assistant":
            out.extend(_assistant_messages(message))
        elif message.role == "tool":
            out.extend(_tool_messages(message))
        else:
            out.append({"role": message.role, "content": render_blocks(message.content)})
    return _pair_tool_calls(out)


def is_output_message(message: dict[str, Any]) -> bool:
    """Whether a chat message is code output fed back to the model (not a question)."""
    content = message.get("content")
    return (
        message.get("role") == "user"
        and isinstance(content, str)
        and content.startswith((OUTPUT_HEADER, TOOL_HEADER))
    )


def render_blocks(blocks: list[Any]) -> str:
    """Text and code blocks as Markdown; runs of output blocks rendered inline."""
    parts: list[str] = []
    i = 0
    while i < len(blocks):
        block = blocks[i]
        if isinstance(block, OutputBlock):
            group, i = _output_run(blocks, i)
            parts.append(render_outputs(group))
            continue
        if isinstance(block, CodeBlock):
            if EXPECT_FLAG not in block.flags:  # checks on the reply are not for the model
                parts.append(render_code(block))
        elif isinstance(block, TextBlock) and block.value.strip():
            parts.append(block.value.strip("\n"))
        i += 1
    return "\n\n".join(parts)


def render_code(block: CodeBlock) -> str:
    """A fenced block with the block's info string, fence longer than any inside."""
    info = format_info(block.language, block.attrs, block.flags, name=block.name)
    return write_fence(block.code, info)


def render_outputs(outputs: list[OutputBlock], title: str = "Output") -> str:
    """What one code block printed: ``title (exit code N):`` and the streams, fenced."""
    exit_code = next((o.exit_code for o in outputs if o.exit_code is not None), None)
    status = []
    if any(o.timed_out for o in outputs):
        status.append("timed out")
    if exit_code is not None:
        status.append(f"exit code {exit_code}")
    head = title + (f" ({', '.join(status)})" if status else "")
    stdout = "".join(o.text for o in outputs if o.stream == "stdout")
    stderr = "".join(o.text for o in outputs if o.stream == "stderr")
    if not stdout and not stderr:
        return f"{head}: no output."
    parts = [f"{head}:"]
    if stdout:
        parts.append(_fenced_text(stdout))
    if stderr:
        parts.append("Standard error:")
        parts.append(_fenced_text(stderr))
    return "\n".join(parts)


def render_feedback(blocks: list[Any]) -> str | None:
    """The ``user`` message that tells the model what an assistant message's code printed."""
    runs: list[tuple[str, list[OutputBlock]]] = []
    number, label = 0, "?"
    i = 0
    while i < len(blocks):
        block = blocks[i]
        if isinstance(block, OutputBlock):
            group, i = _output_run(blocks, i)
            runs.append((label, group))
            continue
        if isinstance(block, CodeBlock):
            number += 1
            label = f"Block {number}" + (f" (`{block.name}`)" if block.name else "")
        i += 1
    if not runs:
        return None
    if number == 1 and len(runs) == 1:
        return render_outputs(runs[0][1], f"{OUTPUT_HEADER} above")
    items = [render_outputs(group, label) for label, group in runs]
    return "\n\n".join([f"{OUTPUT_HEADER}s above.", *items])


def _output_run(blocks: list[Any], i: int) -> tuple[list[OutputBlock], int]:
    group: list[OutputBlock] = []
    while i < len(blocks) and isinstance(blocks[i], OutputBlock):
        group.append(blocks[i])
        i += 1
    return group, i


def _fenced_text(text: str) -> str:
    body = text[:-1] if text.endswith("\n") else text
    return write_fence(body, "text", final_newline=True)


def _assistant_messages(message: Message) -> list[dict[str, Any]]:
    """One assistant message, then (if its code ran) what the code printed, as ``user``."""
    kept = [b for b in message.content if not isinstance(b, OutputBlock)]
    entry: dict[str, Any] = {"role": "assistant", "content": render_blocks(kept)}
    calls = _tool_calls(message.message_metadata)
    if calls:
        entry["tool_calls"] = calls
        entry["content"] = entry["content"] or None
    out = [entry]
    feedback = render_feedback(message.content)
    if feedback is not None:
        out.append({"role": "user", "content": feedback})
    return out


def _tool_calls(metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Tool calls recorded in an assistant message's ``msg-metadata``, OpenAI-shaped."""
    return [call.openai() for call in calls_in(metadata)]


def _tool_messages(message: Message) -> list[dict[str, Any]]:
    body = render_blocks(message.content)
    metadata = message.message_metadata or {}
    if metadata.get("tool_call_id"):
        return [{"role": "tool", "tool_call_id": str(metadata["tool_call_id"]), "content": body}]
    items = metadata.get("content")
    if isinstance(items, list):
        results = [i for i in items if isinstance(i, dict) and i.get("call_id")]
        if results:
            return [
                {
                    "role": "tool",
                    "tool_call_id": str(r["call_id"]),
                    "content": _result_text(r.get("content"), body if len(results) == 1 else ""),
                }
                for r in results
            ]
    return [_tool_as_user({"role": "tool", "content": body})]


def _result_text(value: Any, fallback: str) -> str:
    if value is None:
        return fallback
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tool_as_user(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content") or ""
    return {"role": "user", "content": f"{TOOL_HEADER}\n\n{content}".rstrip()}


def _calls_as_text(message: dict[str, Any]) -> dict[str, Any]:
    lines = [
        f"Called tool `{c.get('function', {}).get('name', '?')}` with arguments "
        f"`{c.get('function', {}).get('arguments', '')}`."
        for c in message["tool_calls"]
    ]
    text = "\n\n".join([p for p in [message.get("content") or "", *lines] if p])
    return {"role": "assistant", "content": text}


def _pair_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep ``tool_calls``/``tool`` pairs only where the server will accept them."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.get("tool_calls"):
            ids = {c["id"] for c in message["tool_calls"]}
            j = i + 1
            while j < len(messages) and messages[j]["role"] == "tool":
                j += 1
            answers = messages[i + 1 : j]
            answered = {m["tool_call_id"] for m in answers}
            if ids <= answered:
                out.append(message)
                out += [m for m in answers if m["tool_call_id"] in ids]
                out += [_tool_as_user(m) for m in answers if m["tool_call_id"] not in ids]
            else:
                out.append(_calls_as_text(message))
                out += [_tool_as_user(m) for m in answers]
            i = j
            continue
        out.append(_tool_as_user(message) if message["role"] == "tool" else message)
        i += 1
    return out


# --- model reply -> content blocks --------------------------------------------------


def parse_reply(text: str) -> list[TextBlock | CodeBlock]:
    """Split a model's Markdown reply into text blocks and fenced code blocks, in order.

    The reply is read as a session document's message is (``parsing.blocks``, a
    CommonMark reader): a fence at the top level is code; a fence inside a list
    item, a quote or an HTML block is text, as any Markdown reader shows it.
    Text is marked ``quoted`` so that export writes it as a blockquote, as the
    session format does for message text: a ``## heading`` in a reply then stays
    part of the reply instead of starting a new message when the export is read back.
    A fence whose info string marks a domarkx block (``output``, ``msg-metadata``,
    ``session-config``, ``setup-script``) is not code the model wrote to run: it
    stays in the reply's text, so the export reads back as the same reply; so
    does a macro link, written with a backslash (``\\[@x](domarkx://...)``).
    """
    # Line ends as a document's are read (a lone "\r" too), so the export reads back.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    found: list[TextBlock | CodeBlock] = []

    def text_until(end: int) -> None:
        value = trim_blank_lines("\n".join(lines[position:end]))
        if value.strip():
            # A macro the model wrote is text: escaped, it stays text when the export
            # is imported again.
            found.append(TextBlock(value=escape_macros(value), quoted=True))

    position = 0
    for block in top_level_fences(lines):
        info = parse_info(block.info)
        if info.special is not None:
            continue
        text_until(block.start)
        found.append(
            CodeBlock(
                language=info.language,
                name=info.name,
                code=block.code,
                attrs=info.attrs,
                flags=info.flags,
            )
        )
        position = block.end
    text_until(len(lines))
    return found
