"""The project's configuration: what the user grants, which a session document can only ask for.

It lives in ``domarkx.toml`` at the project root or, when that file is
absent, in the ``[tool.domarkx]`` table of the root's ``pyproject.toml``
(as ruff reads ``ruff.toml`` before ``pyproject.toml``). A document is
content that can be shared, included or generated; this file is the user's,
so secrets, networks and running model-written code on this machine are
granted here (or on the command line), never by a document.

- ``settings``: the keys, what each grants, what an untrusted file keeps;
- ``loading``: reading the file (one ``ConfigError`` per bad key, with its
  line), once per command and root;
- ``trust``: the user's record of the files they trust (``domarkx trust``);
- ``toml_lines``: which line of a TOML file sets a key;
- ``sizes``: sizes as the file writes them (``512m``), without the models.

A root module: it imports only ``domarkx.errors`` from the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domarkx.config.loading import (
        PYPROJECT_TABLE,
        ConfigError,
        forget,
        load,
        read,
    )
    from domarkx.config.paths import CONFIG_FILE, PYPROJECT
    from domarkx.config.settings import (
        DEFAULT_MEMORY,
        DEFAULT_PIDS_LIMIT,
        MIN_MEMORY,
        SAFE_CAPABILITIES,
        AgentSettings,
        CacheSettings,
        ChecksSettings,
        DockerSettings,
        Endpoint,
        EngineSettings,
        IncludeSettings,
        LayerSettings,
        LimitSettings,
        ProjectConfig,
    )
    from domarkx.config.sizes import DEFAULT_EXPANSION, size_in_bytes

# Where each name lives. The settings are pydantic models (~15 ms to build, and
# pydantic itself when nothing else loaded it): most commands and a build's
# stages import this package but read no configuration, so its names are
# loaded on first use (PEP 562), not on import.
_HOMES = {
    **dict.fromkeys(
        ("PYPROJECT_TABLE", "ConfigError", "forget", "load", "read"),
        "domarkx.config.loading",
    ),
    **dict.fromkeys(("CONFIG_FILE", "PYPROJECT"), "domarkx.config.paths"),
    **dict.fromkeys(("DEFAULT_EXPANSION", "size_in_bytes"), "domarkx.config.sizes"),
}

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_EXPANSION",
    "DEFAULT_MEMORY",
    "DEFAULT_PIDS_LIMIT",
    "MIN_MEMORY",
    "PYPROJECT",
    "PYPROJECT_TABLE",
    "SAFE_CAPABILITIES",
    "AgentSettings",
    "CacheSettings",
    "ChecksSettings",
    "ConfigError",
    "DockerSettings",
    "Endpoint",
    "EngineSettings",
    "IncludeSettings",
    "LayerSettings",
    "LimitSettings",
    "ProjectConfig",
    "forget",
    "load",
    "read",
    "size_in_bytes",
]


if not TYPE_CHECKING:  # the type checker reads the imports above instead

    def __getattr__(name: str) -> Any:
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_HOMES.get(name, "domarkx.config.settings")), name)
        globals()[name] = value
        return value
