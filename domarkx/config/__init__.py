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
- ``toml_lines``: which line of a TOML file sets a key.

A root module: it imports only ``domarkx.errors`` from the package.
"""

from __future__ import annotations

from domarkx.config.loading import PYPROJECT, PYPROJECT_TABLE, ConfigError, forget, load, read
from domarkx.config.settings import (
    CONFIG_FILE,
    DEFAULT_EXPANSION,
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
    size_in_bytes,
)

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
