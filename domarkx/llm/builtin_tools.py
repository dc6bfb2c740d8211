"""The built-in tools besides ``bash`` and ``python``: their schemas, and how a call runs.

- ``execute_command``, ``read_file``, ``write_to_file``, ``list_files``,
  ``apply_diff`` run in the session's sandbox, as code the model asked for:
  the same approval rule as a ``bash``/``python`` call (the caller's
  ``approve``). ``execute_command`` is a ``bash`` block; the file tools run in
  the sandbox's Python through ``domarkx.llm.sandbox_builtins``.
- ``attempt_completion`` runs nowhere: its result ends the tool loop.
- The session tools (``create_session``, ``send_message``, ``get_messages``,
  ``list_sessions``, ``archive_session``) run on the host: the caller passes
  them as ``HostTool`` values (``domarkx.session.agents``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from domarkx.llm import sandbox_builtins

# Asks the grant for code a model wants run (language, code, where): None to run it,
# else the refusal's text (the user's answer, or the configuration's ``approve = "never"``).
Approve = Callable[[str, str, str], str | None]

FINAL = "attempt_completion"  # the tool whose result ends the loop


def tool_spec(
    name: str, description: str, **parameters: tuple[dict[str, Any], bool]
) -> dict[str, Any]:
    """A function tool's schema: each parameter is (its JSON schema, whether it is required)."""
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {key: schema for key, (schema, _) in parameters.items()},
            "required": [key for key, (_, required) in parameters.items() if required],
            "additionalProperties": False,
        },
    }


_TEXT = {"type": "string"}
_PATH = {"type": "string", "description": "A path relative to the sandbox's working folder."}

SANDBOX: dict[str, dict[str, Any]] = {
    spec["name"]: spec
    for spec in (
        tool_spec(
            "execute_command",
            "Run a shell command in the session's sandbox (its working folder); the result "
            "is what it printed and its exit code.",
            command=({"type": "string", "description": "The command line."}, True),
        ),
        tool_spec(
            "read_file",
            "Read a text file of the sandbox's working folder, whole or lines "
            "start_line..end_line (1-based, inclusive).",
            path=(_PATH, True),
            start_line=({"type": ["integer", "null"]}, False),
            end_line=({"type": ["integer", "null"]}, False),
        ),
        tool_spec(
            "write_to_file",
            "Write text to a file of the sandbox's working folder (created with its "
            "folders; replaced, or appended to with append=true).",
            path=(_PATH, True),
            content=(_TEXT, True),
            append=({"type": "boolean", "default": False}, False),
        ),
        tool_spec(
            "list_files",
            "List the files and folders under a folder of the sandbox (folders end in /).",
            path=(dict(_PATH, default="."), False),
            recursive=({"type": "boolean", "default": False}, False),
        ),
        tool_spec(
            "apply_diff",
            "Change a file with a unified diff (`@@ -a,b +c,d @@` hunks), or with "
            "search/replace blocks (<<<<<<< SEARCH, :start_line:N, -------, old lines, "
            "=======, new lines, >>>>>>> REPLACE). When any part does not apply, the file "
            "is left unchanged and the result says why.",
            path=(_PATH, True),
            diff=(_TEXT, True),
        ),
        tool_spec(
            FINAL,
            "Finish: give the final answer. The conversation turn ends with this result.",
            result=({"type": "string", "description": "The final answer."}, True),
            command=({"type": ["string", "null"]}, False),
        ),
    )
}

HOST_NAMES = sandbox_builtins.HOST_TOOLS


@dataclass(frozen=True)
class Outcome:
    """What one built-in call gives the model (as ``tools.ToolResult``)."""

    text: str
    is_error: bool = False
    final: bool = False


@dataclass(frozen=True)
class HostTool:
    """A tool that runs in domarkx's own process (a session tool): schema and function.

    ``run`` receives the decoded arguments and returns the result's text; it
    raises ``HostToolError`` for a result the model reads as an error.
    """

    spec: dict[str, Any]
    run: Callable[[dict[str, Any]], str]


class HostToolError(Exception):
    """A host tool's call failed; the message is the model's error result."""


def call_code(name: str, arguments: dict[str, Any]) -> str:
    """The sandbox block that runs built-in ``name`` (the helper must be installed)."""
    return f"__import__({sandbox_builtins.MODULE!r}).run({name!r}, {arguments!r})\n"


def shown_call(name: str, arguments: dict[str, Any]) -> str:
    """The call as the user is asked to approve it: ``read_file(path='notes.md')``."""
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"{name}({shown})"


def install_code() -> str:
    """A block that loads the sandbox side as module ``sandbox_builtins.MODULE`` and makes
    the older format's imports resolve; it adds no name to the session's globals."""
    module = sandbox_builtins.MODULE
    return (
        "(lambda m: ("
        f"exec(compile({source()!r}, '<domarkx-builtins>', 'exec'), m.__dict__), "
        f"__import__('sys').modules.__setitem__({module!r}, m), m.install()))"
        f"(__import__('types').ModuleType({module!r}))\n"
    )


@cache
def source() -> str:
    """The sandbox side's text."""
    return Path(sandbox_builtins.__file__).read_text(encoding="utf-8")


# The older format's module names that the sandbox side provides.
OLDER_IMPORTS = re.compile(r"^\s*(from|import)\s+(domarkx\.|autogen_core|autogen_ext)", re.M)


def uses_older_imports(code: str) -> bool:
    """Whether a Python setup script imports the older format's modules."""
    return OLDER_IMPORTS.search(code) is not None
