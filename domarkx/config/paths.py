"""Where the configuration lives: the project's files, and the user's own folder.

A leaf module without pydantic: a build's task list (``pipeline.tasks``) and
the expand stage list these files as dependencies, and loading them costs
every no-op build nothing but their ``stat``.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE = "domarkx.toml"
PYPROJECT = "pyproject.toml"
# The user's own configuration, in ``user_config_dir()`` beside the record of trusted files.
USER_FILE = "config.toml"


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/domarkx`` (``~/.config/domarkx`` when unset or relative)."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "domarkx"


def user_config_path() -> Path:
    """The user's own configuration: ``$XDG_CONFIG_HOME/domarkx/config.toml``. It holds
    the keys of ``domarkx.toml`` and grants them to every project, with no trust asked."""
    return user_config_dir() / USER_FILE


def setting_files(root: str) -> list[str]:
    """The configuration files that exist for the project at ``root``, as a build names them.

    The project's own relative to ``root``, the user's absolute.
    """
    found = [name for name in (CONFIG_FILE, PYPROJECT) if os.path.exists(os.path.join(root, name))]
    user = str(user_config_path())
    if os.path.exists(user):
        found.append(user)
    return found
