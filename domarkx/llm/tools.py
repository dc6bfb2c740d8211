"""The tools a session offers its model, and how each call is run in the sandbox.

Two kinds (docs/llm.md, "Tools"):

- the built-ins ``bash`` and ``python``: the call's ``code`` runs in the
  session's sandbox like a code block the model wrote (same engine call, same
  approval rule: ``run_code`` is the caller's, and it asks);
- the built-ins of ``domarkx.llm.builtin_tools``: the file and command tools
  (in the sandbox, with the same approval rule), ``attempt_completion`` (ends
  the loop), and the session tools that run on the host (given by the caller);
- functions of the session's Python setup script: their schemas are derived and
  the calls made inside the sandbox's Python, through the small helper of
  ``domarkx.llm.sandbox_tools`` (``python`` runs one block there). They are the
  user's own code and run without asking.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domarkx.data.models import NOT_RUN, OutputBlock
from domarkx.errors import DomarkxError
from domarkx.execution.engine import BlockResult
from domarkx.llm import builtin_tools, sandbox_tools
from domarkx.llm.builtin_tools import FINAL, Approve, HostTool, HostToolError
from domarkx.llm.messages import render_outputs
from domarkx.llm.reply import ToolCall

BUILTINS: dict[str, dict[str, Any]] = {
    name: {
        "name": name,
        "description": f"Run {label} code in the session's sandbox, in the same persistent "
        f"{process} as the session's code blocks (state carries over between calls). "
        "The result is what it printed and its exit code.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": f"The {label} code to run."}},
            "required": ["code"],
            "additionalProperties": False,
        },
    }
    for name, label, process in (
        ("bash", "bash", "shell"),
        ("python", "Python", "Python process"),
    )
}

# Runs model-written code (language, code, where) and returns its output blocks;
# the caller decides on approval (a refusal is an output with ``refused`` set).
RunCode = Callable[[str, str, str], list[OutputBlock]]
# Runs one block in the sandbox's Python and returns what it did.
RunPython = Callable[[str], BlockResult]


@dataclass(frozen=True)
class ToolResult:
    """What one call gives the model: the text of its ``tool`` message, and whether it failed."""

    text: str
    is_error: bool = False
    final: bool = False  # attempt_completion: the loop ends with this result


class ToolDeclarationError(DomarkxError):
    """``session-config``'s ``tools`` names something that is no tool (the caller adds the line)."""


@dataclass
class ToolBox:
    """The tools of one run: their definitions for the request, and how to call each."""

    functions: list[dict[str, Any]] = field(default_factory=list)  # {name, description, parameters}
    run_code: RunCode | None = None
    python: RunPython | None = None
    # The session tools, which run on the host (``domarkx.session.agents``); None: none.
    host: dict[str, HostTool] | None = None
    # Asks the grant for a built-in file tool's call (None: no asking, it runs).
    approve: Approve | None = None
    # Tool name -> the built-in it stands for (the older format's imported functions).
    routes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def declare(
        cls,
        names: list[str] | None,
        *,
        setup_code: str | None,
        run_code: RunCode,
        python: RunPython,
        host: dict[str, HostTool] | None = None,
        approve: Approve | None = None,
    ) -> ToolBox:
        """The tools ``names`` (session-config) or, when None, the setup script's ``tools``.

        ``setup_code`` is the session's Python setup script (None when it has none
        or it is not Python). A name that is neither built in nor a function of it
        raises ``ToolDeclarationError``.
        """
        box = cls(run_code=run_code, python=python, host=host, approve=approve)
        if names is None:
            if setup_code is None or "tools" not in setup_code:
                return box
            box.functions = box._describe(None, strict=False)
            return box
        known = box.known()
        wanted = [n for n in names if n not in known]
        if wanted and setup_code is None:
            raise ToolDeclarationError(
                f"`tools` names {', '.join(f'`{n}`' for n in wanted)}, which "
                f"{'is' if len(wanted) == 1 else 'are'} not built in ({', '.join(known)}), and "
                "the session has no Python setup-script to define "
                f"{'it' if len(wanted) == 1 else 'them'}",
                hint="define the function in a ```python setup-script``` block, or use bash/python",
            )
        described = {f["name"]: f for f in box._describe(wanted, strict=True)} if wanted else {}
        box.functions = [known[n] if n in known else described[n] for n in names]
        box.routes.update({n: n for n in names if n in known and n not in BUILTINS})
        return box

    def known(self) -> dict[str, dict[str, Any]]:
        """The built-in tools' schemas by name (the session tools only when on offer)."""
        found = dict(BUILTINS)
        found.update(builtin_tools.SANDBOX)
        found.update({name: tool.spec for name, tool in (self.host or {}).items()})
        return found

    def _describe(self, names: list[str] | None, *, strict: bool) -> list[dict[str, Any]]:
        assert self.python is not None
        result = self.python(sandbox_tools.install_code() + sandbox_tools.describe_code(names))
        answer, _ = sandbox_tools.answer_of(result.stdout)
        if answer is None:
            raise DomarkxError(
                "the sandbox's Python did not answer the request for the tools' schemas"
                + (f": {result.stderr.strip().splitlines()[-1]}" if result.stderr.strip() else ""),
                hint="see docs/engines.md, Tools; the setup script must have run",
            )
        problems = answer.get("problems") or {}
        if strict and problems:
            name, why = next(iter(problems.items()))
            raise ToolDeclarationError(
                f"`tools` names `{name}`, which is no tool: {why}",
                hint="name a built-in tool (docs/llm.md), or a function that the Python "
                "setup-script defines",
            )
        self.routes.update(answer.get("builtins") or {})
        return list(answer.get("tools") or [])

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.functions]

    def definitions(self) -> list[dict[str, Any]]:
        """The request's ``tools`` field (chat-completions form)."""
        return [{"type": "function", "function": f} for f in self.functions]

    def call(self, call: ToolCall, where: str) -> ToolResult:
        """Run one call; every failure is a result the model reads, never an exception."""
        spec = next((f for f in self.functions if f["name"] == call.name), None)
        if spec is None:
            known = ", ".join(self.names) or "none"
            return ToolResult(f"unknown tool `{call.name}`; the tools are: {known}", True)
        try:
            arguments = json.loads(call.arguments or "{}", parse_constant=_no_constant)
        except ValueError as exc:
            return ToolResult(f"the arguments are not valid JSON: {exc}", True)
        problem = sandbox_tools.check(spec["parameters"], arguments)
        if problem:
            return ToolResult(f"the arguments do not fit `{call.name}`: {problem}", True)
        if call.name in BUILTINS and spec is BUILTINS[call.name]:
            return self._run_builtin(call.name, arguments["code"], where)
        if call.name in self.routes:
            return self._run_routed(self.routes[call.name], arguments, where)
        return self._run_function(call, arguments)

    def _run_routed(self, builtin: str, arguments: dict[str, Any], where: str) -> ToolResult:
        """A call of a built-in tool (by its name, or an older import's function)."""
        if builtin == FINAL:
            return ToolResult(str(arguments.get("result", "")), False, final=True)
        if builtin == "execute_command":
            return self._run_builtin("bash", str(arguments.get("command", "")), where)
        if builtin in builtin_tools.HOST_NAMES:
            tool = (self.host or {}).get(builtin)
            if tool is None:
                return ToolResult(
                    f"`{builtin}` runs on the host, and this run offers no session tools", True
                )
            try:
                return ToolResult(tool.run(arguments))
            except HostToolError as err:
                return ToolResult(str(err), True)
            except OSError as err:  # a file of sessions/ that cannot be read or written
                return ToolResult(f"`{builtin}` failed: {err}", True)
        if builtin not in builtin_tools.SANDBOX:
            return ToolResult(f"`{builtin}` is not a built-in tool", True)
        refused = (
            self.approve("python", builtin_tools.shown_call(builtin, arguments), where)
            if self.approve is not None
            else None
        )
        if refused is not None:  # the user, or the configuration, said no
            return ToolResult(refused, True)
        assert self.python is not None
        # The helper goes with every call: a restarted Python process has lost it.
        result = self.python(
            builtin_tools.install_code() + builtin_tools.call_code(builtin, arguments)
        )
        answer, before = sandbox_tools.answer_of(result.stdout)
        if answer is None:
            why = "timed out" if result.timed_out else f"exit status {result.exit_code}"
            detail = (before + result.stderr).strip()
            return ToolResult(
                f"the call did not complete ({why})" + (f":\n{detail}" if detail else ""), True
            )
        if not answer.get("ok"):
            return ToolResult(str(answer.get("error") or "the call failed"), True)
        return ToolResult(str(answer.get("result") or ""), False)

    def _run_builtin(self, language: str, code: str, where: str) -> ToolResult:
        assert self.run_code is not None
        outputs = self.run_code(language, code, where)
        refused = next((o for o in outputs if o.refused), None)
        if refused is not None:  # the user, or the configuration, said no
            return ToolResult(refused.text or NOT_RUN, True)
        failed = any(o.timed_out or o.exit_code not in (0, None) for o in outputs)
        return ToolResult(render_outputs(outputs), failed)

    def _run_function(self, call: ToolCall, arguments: dict[str, Any]) -> ToolResult:
        assert self.python is not None
        result = self.python(sandbox_tools.call_code(call.name, arguments))
        answer, before = sandbox_tools.answer_of(result.stdout)
        if answer is None:
            if f"No module named '{sandbox_tools.MODULE}'" in result.stderr:
                return ToolResult(
                    "the call cannot be made: the sandbox's Python process was restarted "
                    "(a block or call timed out), and the setup script's functions went with it",
                    True,
                )
            why = "timed out" if result.timed_out else f"exit status {result.exit_code}"
            text = f"the call did not complete ({why})"
            detail = (before + result.stderr).strip()
            return ToolResult(text + (f":\n{detail}" if detail else ""), True)
        printed = before + (answer.get("output") or "") + result.stderr
        if not answer.get("ok"):
            return ToolResult(_join(printed, answer.get("error") or "the call failed"), True)
        value = answer.get("result")
        if answer.get("plain", True) and value is not None and not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        return ToolResult(_join(printed, value), False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _join(printed: str, result: str | None) -> str:
    """What the model reads: what the call printed, then what it returned."""
    parts = [p for p in (printed.rstrip("\n"), (result or "").rstrip("\n")) if p]
    return "\n".join(parts)
