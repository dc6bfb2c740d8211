"""One registry per kind of plugin (macros, engines, providers), built-ins included.

Built-ins are listed as entry points in domarkx's own ``pyproject.toml``, the
same way third-party packages add theirs; ``BUILTINS`` is the fallback for a
source checkout that was never installed.

The registry is the one place that says what went wrong with a plugin:

- an unknown name is ``unknown <kind> 'x'; known: a, b`` (``unknown``);
- a plugin that fails to import is one ``PluginError`` naming the entry
  point and the cause, never a traceback;
- a plugin registered under a built-in's name does not replace the
  built-in: the built-in is used and a warning names the plugin, since a
  third-party package silently changing what ``docker`` or ``include``
  means would change builds without anyone having asked for it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from domarkx.errors import DomarkxError, EngineError, LLMError, MacroError, PluginError

BUILTINS: dict[str, dict[str, str]] = {
    "domarkx.macros": {
        "include": "domarkx.parsing.builtin_macros:include",
        "set": "domarkx.parsing.builtin_macros:set_value",
        "date": "domarkx.parsing.builtin_macros:date",
    },
    "domarkx.engines": {
        "local_shell": "domarkx.execution.local_shell:LocalShellEngine",
        "docker": "domarkx.execution.docker:DockerEngine",
    },
    "domarkx.providers": {
        "openai": "domarkx.llm.openai_provider:OpenAIProvider",
        "scripted": "domarkx.llm.scripted:ScriptedProvider",
    },
}


@dataclass(frozen=True)
class Kind:
    """How messages speak of one group's plugins."""

    noun: str  # "engine": what one plugin of the group is called
    error: type[DomarkxError]  # the error an unknown name raises
    setting: str  # where a user names one, for the hint


KINDS: dict[str, Kind] = {
    "domarkx.macros": Kind("macro", MacroError, "the macro link `domarkx://NAME`"),
    "domarkx.engines": Kind("engine", EngineError, "`engine:` in session-config"),
    "domarkx.providers": Kind("model provider", LLMError, "`model.provider` in session-config"),
}


@dataclass(frozen=True)
class Target:
    """Where a name of a group points: ``module:attribute``, and who registered it."""

    value: str
    dist: str | None  # the distribution that declared the entry point (None: BUILTINS)


# Plugins registered at run time (tests, embedding applications).
_registered: dict[str, dict[str, Any]] = {}


def _kind(group: str) -> Kind:
    return KINDS.get(group) or Kind(group.rpartition(".")[2], DomarkxError, "its name")


def _dist_name(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.metadata["Name"] or "") or None


@cache
def _entry_point_targets(group: str) -> dict[str, Target]:
    builtins = BUILTINS.get(group, {})
    targets = {name: Target(value, None) for name, value in builtins.items()}
    for ep in entry_points(group=group):
        if ep.name in builtins and ep.value != builtins[ep.name]:
            # A built-in's name: keep the built-in and say so (see the module docstring).
            who = _dist_name(ep) or "an installed package"
            print(
                f"domarkx: warning: {who} registers the {_kind(group).noun} "
                f"`{ep.name} = {ep.value}` in {group}, the name of a built-in; "
                f"the built-in `{ep.name}` is used (give the plugin another name)",
                file=sys.stderr,
            )
            continue
        targets[ep.name] = Target(ep.value, _dist_name(ep))
    return targets


def refresh() -> None:
    """Look the entry points up again on next use (a package was installed or removed).

    They are read once per process otherwise: the installed plugins do not
    change while a command runs.
    """
    _entry_point_targets.cache_clear()


def names(group: str) -> list[str]:
    """Every name registered in ``group``, sorted."""
    return sorted(set(_entry_point_targets(group)) | set(_registered.get(group, {})))


def unknown(group: str, name: str, hint: str | None = None) -> DomarkxError:
    """The error for a name nobody registered: ``unknown engine 'x'; known: a, b``."""
    kind = _kind(group)
    return kind.error(
        f"unknown {kind.noun} {name!r}; known: {', '.join(names(group)) or '(none)'}",
        hint=hint
        or f"set {kind.setting} to a known name, or install the package that provides {name!r}",
    )


def find(group: str, name: str) -> Any | None:
    """The object registered as ``name`` in ``group``, or None when nobody registered it.

    A plugin that cannot be imported raises ``PluginError``.
    """
    if name in _registered.get(group, {}):
        return _registered[group][name]
    target = _entry_point_targets(group).get(name)
    if target is None:
        return None
    module_name, _, attr = target.value.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as err:
        # Whatever the plugin's import raised (ImportError, SyntaxError, its own bug).
        kind = _kind(group)
        by = f" (from {target.dist})" if target.dist else ""
        raise PluginError(
            f"the {kind.noun} plugin `{name} = {target.value}`{by} in {group} cannot be "
            f"loaded: {type(err).__name__}: {err}",
            hint=f"reinstall or uninstall the package that provides {kind.noun} `{name}`"
            " (`--debug` shows the traceback)",
        ) from err
    return obj


def load(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``; ``unknown`` when there is none."""
    obj = find(group, name)
    if obj is None:
        raise unknown(group, name)
    return obj


def register(group: str, name: str, obj: Any, *, replace_builtin: bool = False) -> None:
    """Register ``obj`` as ``name`` without an entry point (tests, embedding).

    A built-in's name is refused unless ``replace_builtin`` says it is meant.
    """
    if name in BUILTINS.get(group, {}) and not replace_builtin:
        raise PluginError(
            f"{name!r} is a built-in {_kind(group).noun}; register the plugin under another name",
            hint="pass replace_builtin=True to replace the built-in on purpose",
        )
    _registered.setdefault(group, {})[name] = obj


def unregister(group: str, name: str) -> None:
    """Forget a plugin registered with ``register``."""
    _registered.get(group, {}).pop(name, None)
