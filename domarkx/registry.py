"""One registry per kind of plugin (macros, engines, providers), built-ins included.

Built-ins are listed as entry points in domarkx's own ``pyproject.toml``, the
same way third-party packages add theirs; ``BUILTINS`` is the fallback for a
source checkout that was never installed.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

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

# Plugins registered at run time (tests, embedding applications).
_registered: dict[str, dict[str, Any]] = {}


@cache
def _entry_point_targets(group: str) -> dict[str, str]:
    targets = dict(BUILTINS.get(group, {}))
    for ep in entry_points(group=group):
        targets[ep.name] = ep.value
    return targets


def names(group: str) -> list[str]:
    """Every name registered in ``group``, sorted."""
    return sorted(set(_entry_point_targets(group)) | set(_registered.get(group, {})))


def load(group: str, name: str) -> Any | None:
    """The object registered as ``name`` in ``group``, or None."""
    if name in _registered.get(group, {}):
        return _registered[group][name]
    target = _entry_point_targets(group).get(name)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def register(group: str, name: str, obj: Any) -> None:
    """Register ``obj`` as ``name`` without an entry point (tests, embedding)."""
    _registered.setdefault(group, {})[name] = obj


def unregister(group: str, name: str) -> None:
    _registered.get(group, {}).pop(name, None)
